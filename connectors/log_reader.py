"""Reading the event store: the partitions a key maps to, from the start to the end."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

_partitioner = DefaultPartitioner()


def partition_for(key: str, partitions: int) -> int:
    """The partition every Kafka client with the default (murmur2) partitioner picks."""
    ids = list(range(partitions))
    return int(_partitioner(key.encode(), ids, ids))


async def read_partitions(
    bootstrap_servers: str, partitions: list[TopicPartition]
) -> AsyncIterator[tuple[TopicPartition, int, bytes | None, bytes]]:
    """(partition, offset, key, value) of every message of these partitions that exists now."""
    async for message in read_messages(bootstrap_servers, partitions):
        yield TopicPartition(message.topic, message.partition), message.offset, message.key, message.value


async def read_messages(bootstrap_servers: str, partitions: list[TopicPartition]) -> AsyncIterator[ConsumerRecord]:
    """Every message (with headers and timestamp) of these partitions that exists now, then stop."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        begins = await consumer.beginning_offsets(partitions)
        pending = {tp for tp in partitions if ends[tp] > begins[tp]}
        # Explicit offsets: seek_to_beginning() races with a fetch already under way
        # and can silently read nothing.
        for tp in partitions:
            consumer.seek(tp, begins[tp])
        while pending:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset < ends[tp]:
                        yield message
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
