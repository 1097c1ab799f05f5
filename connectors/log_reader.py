"""Reading the event store: the partitions a key maps to, from the start to the end."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
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


class PartitionReader:
    """Point reads for a consumer group's worker: where the group committed, and a range of a
    partition read back directly (what a consumer library skipped). Opened on first use."""

    def __init__(self, bootstrap_servers: str, group_id: str) -> None:
        self.bootstrap_servers, self.group_id = bootstrap_servers, group_id
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def committed(self, tp: TopicPartition) -> int:
        """The group's committed offset of `tp`, or the partition's first offset if it has none."""
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
            await self._admin.start()
        offsets = await self._admin.list_consumer_group_offsets(self.group_id, partitions=[tp])
        found = offsets.get(tp)
        if found is not None and found.offset >= 0:
            return int(found.offset)
        consumer = await self._reader()
        return int((await consumer.beginning_offsets([tp]))[tp])

    async def read(self, tp: TopicPartition, start: int, end: int) -> list[ConsumerRecord]:
        """The messages of `tp` with start <= offset < end, in order."""
        consumer = await self._reader()
        consumer.assign([tp])
        consumer.seek(tp, start)  # explicit offset: seek_to_*() races with the first fetch
        found: list[ConsumerRecord] = []
        while await consumer.position(tp) < end:
            for message in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                if message.offset < end:
                    found.append(message)
        return found

    async def missing_topics(self, expected: dict[str, int]) -> list[str]:
        """Which of these topics the broker does not have with that many partitions (raises if unreachable)."""
        consumer = await self._reader()
        cluster = await consumer._client.fetch_all_metadata()
        return sorted(name for name, n in expected.items() if len(cluster.partitions_for_topic(name) or ()) != n)

    async def _reader(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False, group_id=None
            )
            await self._consumer.start()
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()
