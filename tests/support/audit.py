"""Asking the money auditor (services.auditor) what it found, as a second witness."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from connectors.config import Config
from services.auditor import AUDITED
from tests.support.kafka import reader


async def end_offsets(config: Config, names: tuple[str, ...] = AUDITED) -> dict[str, int]:
    """'topic/partition' -> the offset the next message there will get."""
    consumer = AIOKafkaConsumer(**reader(config).aiokafka(), group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in names for p in range(config.kafka.partitions)]
        return {f"{tp.topic}/{tp.partition}": end for tp, end in (await consumer.end_offsets(parts)).items()}
    finally:
        await consumer.stop()


def _get(config: Config, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{config.auditor.port}{path}", timeout=5) as response:
        return json.loads(response.read())


async def auditor_get(config: Config, path: str) -> Any:
    return await asyncio.to_thread(_get, config, path)


async def open_violations_since(config: Config, since: dict[str, int]) -> list[dict[str, Any]] | str:
    """The violations not cleared whose event lies after `since`, once the auditor has read
    the log up to now and judged every payment; else what it is still doing."""
    upto = await end_offsets(config)
    status = await auditor_get(config, "/status")
    behind = [tp for tp, end in upto.items() if status["positions"].get(tp, 0) < end]
    if behind or status["unjudged_payments"]:
        return f"the auditor is behind on {len(behind)} partition(s), {status['unjudged_payments']} payment(s) unjudged"
    return [
        v
        for v in await auditor_get(config, "/violations")
        if not v["cleared"] and v["at"]["offset"] >= since.get(f"{v['at']['topic']}/{v['at']['partition']}", 0)
    ]


def describe(violation: dict[str, Any]) -> str:
    at = violation["at"]
    return f"{violation['invariant']} at {at['topic']}@{at['partition']}/{at['offset']}: {violation['message']}"
