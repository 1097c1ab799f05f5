"""What the projector's /ready and /metrics say about each projection: how far behind each
partition is, since when it has not advanced, and what is being retried."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from connectors.metrics import PROJECTION_LAG_MESSAGES, PROJECTION_LAG_SECONDS, PROJECTION_OLDEST_UNPROJECTED_SECONDS


@dataclass
class PartitionProgress:
    applied: int = -1  # the last offset the views hold
    highwater: int | None = None  # the next offset the broker will write
    first_unprojected_at: float | None = None  # broker timestamp (s) of the oldest event not yet applied
    advanced_at: float = field(default_factory=time.monotonic)


@dataclass
class ProjectionHealth:
    """What /ready and /metrics say about one projection: how far behind, since when, and why."""

    name: str
    stall_after_s: float
    partitions: dict[TopicPartition, PartitionProgress] = field(default_factory=dict)
    # What is being retried: a partition waiting for a cause, or every partition during an outage.
    retrying: dict[str, str] = field(default_factory=dict)
    dead_letters: int = 0

    def progress(self, tp: TopicPartition) -> PartitionProgress:
        return self.partitions.setdefault(tp, PartitionProgress())

    def fetched(self, consumer: AIOKafkaConsumer, tp: TopicPartition, messages: list[ConsumerRecord]) -> None:
        state = self.progress(tp)
        state.highwater = consumer.highwater(tp)
        pending = [m for m in messages if m.offset > state.applied]
        if pending and state.first_unprojected_at is None:
            state.first_unprojected_at = pending[0].timestamp / 1000

    def applied(self, tp: TopicPartition, last: ConsumerRecord) -> None:
        state = self.progress(tp)
        if last.offset > state.applied:
            state.applied, state.advanced_at = last.offset, time.monotonic()
        state.first_unprojected_at = None
        PROJECTION_LAG_SECONDS.labels(self.name).set(max(0.0, time.time() - last.timestamp / 1000))

    def publish(self) -> None:
        now = time.monotonic()
        for tp, state in self.partitions.items():
            lag = max(0, (state.highwater or 0) - 1 - state.applied) if state.highwater is not None else 0
            if not lag:
                state.advanced_at = now  # caught up: the stall clock starts when it falls behind
            PROJECTION_LAG_MESSAGES.labels(self.name, tp.topic, str(tp.partition)).set(lag)
            age = time.time() - state.first_unprojected_at if state.first_unprojected_at and lag else 0.0
            PROJECTION_OLDEST_UNPROJECTED_SECONDS.labels(self.name, tp.topic, str(tp.partition)).set(max(0.0, age))

    def stalled(self) -> dict[str, int]:
        """Partitions behind their end that have not advanced for stall_after_s."""
        now, found = time.monotonic(), {}
        for tp, state in self.partitions.items():
            lag = max(0, (state.highwater or 0) - 1 - state.applied) if state.highwater is not None else 0
            if lag and now - state.advanced_at > self.stall_after_s:
                found[f"{tp.topic}/{tp.partition}"] = lag
        return found
