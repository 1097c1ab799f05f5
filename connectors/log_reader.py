"""Reading the event store: the partition a key maps to, the one log reader, and point reads
for a consumer group's worker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

from connectors.kafka_security import KafkaAccess

_partitioner = DefaultPartitioner()


def partition_for(key: str, partitions: int) -> int:
    """The partition every Kafka client with the default (murmur2) partitioner picks."""
    ids = list(range(partitions))
    return int(_partitioner(key.encode(), ids, ids))


async def read_partitions(
    access: KafkaAccess, partitions: list[TopicPartition]
) -> AsyncIterator[tuple[TopicPartition, int, bytes | None, bytes]]:
    """(partition, offset, key, value) of every message of these partitions that exists now."""
    async for message in read_messages(access, partitions):
        yield TopicPartition(message.topic, message.partition), message.offset, message.key, message.value


async def read_messages(access: KafkaAccess, partitions: list[TopicPartition]) -> AsyncIterator[ConsumerRecord]:
    """Every message (with headers and timestamp) of these partitions that exists now, then stop."""
    reader = LogReader(access)
    await reader.start()
    try:
        async for message in reader.read(await reader.offsets_at(partitions, None), await reader.ends(partitions)):
            yield message
    finally:
        await reader.stop()


class LogReader:
    """The one way this code base reads the event store: an assign-only consumer (no group,
    commits nothing, disturbs no one) that reads chosen partitions from chosen offsets, either
    up to an end (`read`) or as they grow (`add` then `fetch`). The console, the APIs' outcome
    waiter and the benchmark's tail are built on it.

    Offsets are always explicit: seek_to_beginning() and seek_to_end() right after assign()
    race with the first fetch and can silently read nothing."""

    def __init__(self, access: KafkaAccess, request_timeout_ms: int = 40_000) -> None:
        self.consumer = AIOKafkaConsumer(
            **access.aiokafka(),
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
            request_timeout_ms=request_timeout_ms,
        )
        self.assigned: dict[TopicPartition, None] = {}  # insertion-ordered set
        self._position: dict[TopicPartition, int] = {}
        self.cluster: Any = None

    async def start(self) -> None:
        await self.consumer.start()
        # topics() would not update partitions_for_topic(); keep the metadata ourselves.
        self.cluster = await self.consumer._client.fetch_all_metadata()

    async def stop(self) -> None:
        await self.consumer.stop()

    def topics(self) -> set[str]:
        return set(self.cluster.topics())

    def partitions(self, topic: str) -> list[int]:
        """The topic's partitions, none when it does not exist."""
        return sorted(self.cluster.partitions_for_topic(topic) or ())

    def all_partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for topic in topics for p in self.partitions(topic)]

    async def offsets_at(self, tps: Iterable[TopicPartition], since_ms: int | None) -> dict[TopicPartition, int]:
        """The first offset of each partition, or of its first message at or after `since_ms`."""
        tps = list(tps)
        if since_ms is None:
            return dict(await self.consumer.beginning_offsets(tps))
        found = await self.consumer.offsets_for_times({tp: since_ms for tp in tps})
        ends = await self.consumer.end_offsets(tps)
        return {tp: found[tp].offset if found.get(tp) else ends[tp] for tp in tps}

    async def ends(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return dict(await self.consumer.end_offsets(list(tps)))

    def add(self, starts: dict[TopicPartition, int]) -> None:
        """Read these partitions from these offsets too, keeping where the others stand."""
        # assign() forgets every position, so re-seek the partitions already being read.
        keep = {tp: self._position.get(tp, 0) for tp in self.assigned if tp not in starts}
        for tp in starts:
            self.assigned[tp] = None
        self.consumer.assign(list(self.assigned))
        for tp, offset in {**keep, **starts}.items():
            self.consumer.seek(tp, offset)
            self._position[tp] = offset

    def restart(self, starts: dict[TopicPartition, int]) -> None:
        """Read exactly these partitions from these offsets, forgetting the others."""
        self.assigned.clear()
        self._position = {}
        self.add(starts)

    async def follow_from_end(self, topics: Iterable[str]) -> list[TopicPartition]:
        """Read every partition of these topics from its end as it is now: only what comes next."""
        tps = self.all_partitions(topics)
        self.add(await self.ends(tps))
        return tps

    async def fetch(self, timeout_ms: int = 500, max_records: int | None = 2000) -> list[ConsumerRecord]:
        """What arrived on the partitions being read, in order per partition."""
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        out = []
        for tp, records in batches.items():
            out.extend(records)
            if records:
                self._position[tp] = records[-1].offset + 1
        return out

    async def read(
        self, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int]
    ) -> AsyncIterator[ConsumerRecord]:
        """Every message from starts up to (not including) ends, then stop."""
        pending = {tp for tp in starts if ends[tp] > starts[tp]}
        self.restart({tp: starts[tp] for tp in pending})
        # Keyed by plain tuples: building a TopicPartition per record was 13 % of a rebuild's CPU.
        end_of = {(tp.topic, tp.partition): end for tp, end in ends.items()}
        while pending:
            for record in await self.fetch():
                if record.offset < end_of[record.topic, record.partition]:
                    yield record
            for tp in list(pending):
                if await self.consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)


class PartitionReader:
    """Point reads for a consumer group's worker: where the group committed, and a range of a
    partition read back directly (what a consumer library skipped). Opened on first use."""

    def __init__(self, access: KafkaAccess, group_id: str) -> None:
        self.access, self.group_id = access, group_id
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def committed(self, tp: TopicPartition) -> int:
        """The group's committed offset of `tp`, or the partition's first offset if it has none."""
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(**self.access.aiokafka())
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
            self._consumer = AIOKafkaConsumer(**self.access.aiokafka(), enable_auto_commit=False, group_id=None)
            await self._consumer.start()
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()
