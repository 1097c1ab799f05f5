"""Reading and writing the real test broker directly, as a test needs to."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from connectors.avro import SingleObjectCodec
from connectors.config import Config
from connectors.kafka_io import EventPublisher
from connectors.log_reader import partition_for, read_partitions

codec = SingleObjectCodec()


async def events_for_key(config: Config, topic: str, key: str) -> list[dict[str, Any]]:
    """Every decoded event on the key's partition whose Kafka key is `key`, in log order."""
    partition = partition_for(key, config.kafka.partitions)
    events = []
    async for _, _, message_key, value in read_partitions(
        config.kafka.bootstrap_servers, [TopicPartition(topic, partition)]
    ):
        if message_key == key.encode():
            events.append(codec.decode(value))
    return events


async def raw_messages(config: Config, topic: str) -> list[tuple[bytes | None, bytes]]:
    partitions = [TopicPartition(topic, p) for p in range(config.kafka.partitions)]
    return [(key, value) async for _, _, key, value in read_partitions(config.kafka.bootstrap_servers, partitions)]


async def publish(config: Config, topic: str, key: str, *events: dict[str, Any]) -> None:
    publisher = EventPublisher(config.kafka.bootstrap_servers, codec)
    await publisher.start()
    try:
        for event in events:
            await publisher.publish(topic, key, event)
    finally:
        await publisher.stop()
