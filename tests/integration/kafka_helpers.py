"""Reading and writing the real test broker directly, as a test needs to."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from connectors.avro import SingleObjectCodec
from connectors.config import Config
from connectors.kafka_io import EventPublisher
from connectors.kafka_security import KafkaAccess
from connectors.log_reader import partition_for, read_partitions
from tests.support.commits import commits_behind
from tests.support.kafka import reader, writer

codec = SingleObjectCodec()


async def events_for_key(config: Config, topic: str, key: str) -> list[dict[str, Any]]:
    """Every decoded event on the key's partition whose Kafka key is `key`, in log order."""
    partition = partition_for(key, config.kafka.partitions)
    events = []
    async for _, _, message_key, value in read_partitions(reader(config), [TopicPartition(topic, partition)]):
        if message_key == key.encode():
            events.append(codec.decode(value))
    return events


async def raw_messages(
    config: Config, topic: str, access: KafkaAccess | None = None
) -> list[tuple[bytes | None, bytes]]:
    """Read as the console unless `access` says otherwise (a test's own topic)."""
    partitions = [TopicPartition(topic, p) for p in range(config.kafka.partitions)]
    return [(key, value) async for _, _, key, value in read_partitions(access or reader(config), partitions)]


async def publish(config: Config, topic: str, key: str, *events: dict[str, Any]) -> None:
    """Written as the principal that writes `topic` in production (tests.support.kafka)."""
    publisher = EventPublisher(writer(config, topic), codec)
    await publisher.start()
    try:
        for event in events:
            await publisher.publish(topic, key, event)
    finally:
        await publisher.stop()


async def end_offsets(config: Config, *topics: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(**reader(config).aiokafka(), group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in topics for p in range(config.kafka.partitions)]
        return dict(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()


async def consumed(config: Config, group: str, *topics: str, timeout: float = 30.0) -> None:
    """Wait until `group` has committed past everything now on `topics`: a negative check that
    follows proves the consumer saw the messages in question, instead of hoping a sleep was enough."""
    ends = {tp: end for tp, end in (await end_offsets(config, *topics)).items() if end > 0}
    behind = await commits_behind(config, group, ends, timeout)
    if behind:
        ends_not_reached = {tp: end for tp, (_, end) in behind.items()}
        raise AssertionError(f"{group} has not consumed {ends_not_reached} after {timeout:.0f}s")


async def projected(config: Config, db: Any, projection: str, *topics: str, timeout: float = 30.0) -> None:
    """Wait until the projector's stored offsets for `projection` pass everything now on `topics`."""
    ends = {tp: end for tp, end in (await end_offsets(config, *topics)).items() if end > 0}
    deadline = time.monotonic() + timeout
    while True:
        rows = await db.fetch(
            "SELECT topic, partition, last_offset FROM projection_offsets WHERE projection = $1", projection
        )
        reached = {TopicPartition(r["topic"], r["partition"]): r["last_offset"] + 1 for r in rows}
        behind = {tp: end for tp, end in ends.items() if reached.get(tp, 0) < end}
        if not behind:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"projection {projection} has not reached {behind} after {timeout:.0f}s")
        await asyncio.sleep(0.2)


async def saga_passed(config: Config, db: Any = None) -> None:
    """Wait until the payment worker has consumed everything now on the provider-events topic and
    then everything that caused on the operation topic, and (given a connection) the projector
    has stored it: what a negative check after a replayed webhook needs, the chain it could touch."""
    await consumed(config, "payment-worker", "external-provider-events")
    await consumed(config, "payment-worker", "payment.payment_operation.completed")
    if db is not None:
        await projected(config, db, "payment_views", "payment.payment_operation.completed")


@contextlib.asynccontextmanager
async def tailing(config: Config, topic: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Every event written to `topic` from now on, decoded, appended as it arrives."""
    seen: list[dict[str, Any]] = []
    consumer = AIOKafkaConsumer(**reader(config).aiokafka(), group_id=None)
    await consumer.start()
    parts = [TopicPartition(topic, p) for p in range(config.kafka.partitions)]
    consumer.assign(parts)
    for tp, end in (await consumer.end_offsets(parts)).items():
        consumer.seek(tp, end)  # explicit offsets: seek_to_end() races with the first fetch

    async def read() -> None:
        while True:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend(codec.decode(m.value) for m in messages)

    reading = asyncio.create_task(read())
    try:
        yield seen
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await consumer.stop()
