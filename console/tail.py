"""payments tail TOPIC: decoded events of one topic as they arrive (or from an offset or a time)."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from aiokafka import TopicPartition

from connectors.config import Config
from console.entries import Printer, sort_key
from console.sources import Log, stop_on_signals


async def tail(
    config: Config,
    topic: str,
    start: str,
    offset: int | None,
    since: int | None,
    key: str | None,
    as_json: bool,
    limit: int | None,
    out: TextIO,
) -> int:
    async with Log(config) as log:
        tps = [log.key_partition(topic, key)] if key else [TopicPartition(topic, p) for p in log.partitions(topic)]
        if start == "beginning":
            starts = await log.offsets_at(tps, None)
        elif offset is not None:
            ends = await log.ends(tps)
            starts = {tp: min(offset, ends[tp]) for tp in tps}
        elif since is not None:
            starts = await log.offsets_at(tps, since)
        else:
            starts = await log.ends(tps)
        log.add(starts)
        where = ", ".join(f"{tp.partition}@{o}" for tp, o in sorted(starts.items()))
        print(f"tailing {topic} partitions {where} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        await stop_on_signals(stop)
        printer, shown = Printer(out, as_json), 0
        while not stop.is_set() and (limit is None or shown < limit):
            for entry in sorted(await log.fetch(), key=sort_key):
                if key is not None and entry.key != key:
                    continue
                printer.entry(entry)
                shown += 1
                if limit is not None and shown >= limit:
                    break
    return 0
