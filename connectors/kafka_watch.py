"""What can be known of the log without reading it: partitions, their first and last offsets,
the offset at a time and the newest timestamp, and each consumer group's state, members and
committed offsets. DESCRIBE on topics and groups is enough for all of it (no READ), so a
principal that only watches sees no event's content.

Through librdkafka (confluent-kafka), synchronous: aiokafka cannot decode Kafka 4's
DescribeGroups answer, and has no ListOffsets for the newest timestamp (KIP-734)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from connectors.kafka_security import KafkaAccess

Partition = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class Group:
    name: str
    state: str  # stable, empty, dead, preparingrebalance...
    members: int
    committed: dict[Partition, int]


class KafkaWatch:
    def __init__(self, access: KafkaAccess, timeout_s: float) -> None:
        # log_level 4: librdkafka's info lines ("Purging 1 unserved events") are not for operators.
        self.admin = AdminClient({**access.confluent(), "log_level": 4})
        self.timeout_s = timeout_s

    def partitions(self, *topics: str) -> list[Partition]:
        found = []
        for topic in topics:
            metadata = self.admin.list_topics(topic=topic, timeout=self.timeout_s).topics[topic]
            if metadata.error is not None:
                raise RuntimeError(f"topic {topic}: {metadata.error}")
            found += [(topic, p) for p in sorted(metadata.partitions)]
        return found

    def offsets(self, partitions: Iterable[Partition], spec: OffsetSpec) -> dict[Partition, tuple[int, int]]:
        """(offset, timestamp in ms) of each partition for `spec`; (-1, -1) when there is none."""
        asked = {TopicPartition(topic, p): spec for topic, p in partitions}
        if not asked:
            return {}
        answered = self.admin.list_offsets(asked, request_timeout=self.timeout_s)
        return {(tp.topic, tp.partition): (f.result().offset, f.result().timestamp) for tp, f in answered.items()}

    def ends(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        return {tp: offset for tp, (offset, _) in self.offsets(partitions, OffsetSpec.latest()).items()}

    def groups(self, names: list[str]) -> list[Group]:
        futures = self.admin.describe_consumer_groups(names, request_timeout=self.timeout_s)
        described = {name: future.result() for name, future in futures.items()}
        found = []
        for name in names:
            asked = [ConsumerGroupTopicPartitions(name)]
            (offsets,) = self.admin.list_consumer_group_offsets(asked, request_timeout=self.timeout_s).values()
            committed = {(p.topic, p.partition): p.offset for p in offsets.result().topic_partitions if p.offset >= 0}
            description = described[name]
            found.append(Group(name, description.state.name.lower(), len(description.members), committed))
        return found
