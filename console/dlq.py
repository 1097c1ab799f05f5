"""payments dlq list | replay: dead letters with their reasons; a worker's letter goes back on
its source topic, a projector's letter is applied to its projection again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import TextIO

import asyncpg
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from connectors.avro import EventDecodeError, make_codec
from connectors.config import Config
from connectors.credentials import OPERATOR
from connectors.pg_roles import PROJECTOR as PROJECTOR_ROLE
from connectors.topics import PAYMENT_DLQ
from console.entries import Entry, fmt_time, jsonable, key_text, preview
from console.sources import ConsoleError, Log, connect_postgres, console_access, kafka_hint

REPLAY_HEADER = "dlq-replay"


async def dead_letters(log: Log) -> list[Entry]:
    tps = [TopicPartition(PAYMENT_DLQ.name, p) for p in log.partitions(PAYMENT_DLQ.name)]
    letters = [e async for e in log.read(await log.offsets_at(tps, None), await log.ends(tps))]
    # A letter is written again when its consumer reads the log again (a projection rebuilt from
    # offset 0 refuses the same event): same id, shown once.
    seen: set[str] = set()
    unique = []
    for entry in sorted(letters, key=lambda e: (e.partition, e.offset)):
        letter_id = (entry.event or {}).get("envelope", {}).get("event_id") or f"{entry.partition}/{entry.offset}"
        if letter_id not in seen:
            seen.add(letter_id)
            unique.append(entry)
    return unique


def letter_json(entry: Entry) -> str:
    event = entry.event or {}
    return json.dumps(
        jsonable(
            {
                "partition": entry.partition,
                "offset": entry.offset,
                "time": fmt_time(entry.timestamp),
                "consumer": event.get("consumer"),
                "source_topic": event.get("source_topic"),
                "source_partition": event.get("source_partition"),
                "source_offset": event.get("source_offset"),
                "key": key_text(event.get("key")),
                "error_type": event.get("error_type"),
                "error_message": event.get("error_message") or entry.error,
                "attempts": event.get("attempts"),
                "original_event_type": entry.inner["envelope"]["event_type"] if entry.inner else None,
                "value": event.get("value"),
            }
        )
    )


def letter_lines(entry: Entry) -> list[str]:
    if entry.event is None:
        return [f"[{entry.partition}]@{entry.offset} {fmt_time(entry.timestamp)} not a DeadLetter: {entry.error}"]
    d = entry.event
    original = entry.inner["envelope"]["event_type"] if entry.inner else "undecodable " + preview(d["value"])
    return [
        f"[{entry.partition}]@{entry.offset} {fmt_time(entry.timestamp)} {d['consumer']} gave up after "
        f"{d['attempts']} attempt(s)",
        f"    reason: {d['error_type']}: {d['error_message']}",
        f"    source: {d['source_topic']}[{d['source_partition']}]@{d['source_offset']} key={key_text(d['key'])} "
        f"original={original}",
    ]


async def dlq_list(config: Config, as_json: bool, out: TextIO) -> int:
    async with Log(config) as log:
        letters = await dead_letters(log)
    if not as_json:
        print(f"{len(letters)} dead letter(s) on {PAYMENT_DLQ.name} ([partition]@offset):", file=out)
    for entry in letters:
        if as_json:
            print(letter_json(entry), file=out)
        else:
            print("\n".join(letter_lines(entry)), file=out)
    return 0


def choose_letters(letters: Sequence[Entry], offsets: Sequence[int], partition: int | None) -> list[Entry]:
    """The dead letters named by offset (and partition); an ambiguous offset is an error."""
    chosen = []
    for offset in offsets:
        matches = [e for e in letters if e.offset == offset and partition in (None, e.partition)]
        if not matches:
            where = f"partition {partition}" if partition is not None else "any partition"
            raise ConsoleError(f"no dead letter at offset {offset} on {where}: see `payments dlq list`")
        if len(matches) > 1:
            parts = ", ".join(str(e.partition) for e in matches)
            raise ConsoleError(f"offset {offset} exists on partitions {parts}: add --partition P")
        chosen.append(matches[0])
    return chosen


PROJECTOR_PREFIX = "projector:"


async def dlq_replay(config: Config, offsets: list[int], partition: int | None, replay_all: bool, out: TextIO) -> int:
    """A worker's letter goes back on its source topic (the step applies it once); a projector's
    letter is applied to its projection again, since the workers already handled the event."""
    async with Log(config) as log:
        letters = [e for e in await dead_letters(log) if e.event is not None]
    chosen = letters if replay_all else choose_letters(letters, offsets, partition)
    if not chosen:
        print("nothing to replay: payment.dlq is empty", file=out)
        return 0
    projected = [e for e in chosen if (e.event or {}).get("consumer", "").startswith(PROJECTOR_PREFIX)]
    if projected:
        await reapply_to_projections(config, projected, out)
    republished = [e for e in chosen if e not in projected]
    if not republished:
        return 0
    # Putting a letter back is an operator's act: the `operator` principal may write the
    # workers' source topics and nothing else (connectors/kafka_acl.py).
    producer = AIOKafkaProducer(**console_access(config, OPERATOR).aiokafka(), acks="all", enable_idempotence=True)
    try:
        await asyncio.wait_for(producer.start(), 15)
    except (KafkaConnectionError, TimeoutError) as exc:
        raise ConsoleError(kafka_hint(config)) from exc
    try:
        for entry in republished:
            d = entry.event or {}
            origin = f"{PAYMENT_DLQ.name}/{entry.partition}/{entry.offset}"
            sent = await producer.send_and_wait(
                d["source_topic"], d["value"], key=d["key"], headers=[(REPLAY_HEADER, origin.encode())]
            )
            print(
                f"replayed [{entry.partition}]@{entry.offset} ({d['error_type']}) -> "
                f"{sent.topic}[{sent.partition}]@{sent.offset} key={key_text(d['key'])}",
                file=out,
            )
    finally:
        await producer.stop()
    return 0


async def reapply_to_projections(config: Config, letters: list[Entry], out: TextIO) -> None:
    from services.projector import PROJECTIONS

    by_name = {p.name: p for p in PROJECTIONS}
    codec = make_codec(config.kafka.schema_registry_url or None)
    conn = await connect_postgres(config, PROJECTOR_ROLE)  # it does the projector's work: same rights
    try:
        for entry in letters:
            d = entry.event or {}
            name = d["consumer"][len(PROJECTOR_PREFIX) :]
            where = f"[{entry.partition}]@{entry.offset}"
            try:
                event = codec.decode(d["value"])
                applied = name in by_name and await by_name[name].reapply(conn, event)
            except (EventDecodeError, asyncpg.PostgresError, UnicodeError, ValueError, KeyError) as exc:
                print(f"{where}: still refused by projection {name}: {type(exc).__name__}: {exc}", file=out)
                continue
            verdict = "re-applied to" if applied else "nothing to apply in"
            print(f"{where} ({d['error_type']}): {verdict} projection {name}", file=out)
    finally:
        await conn.close()
