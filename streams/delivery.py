"""Every offset of an assigned partition reaches its handler once per assignment, in order,
whatever faust's fetcher does.

faust 0.15.3 can skip messages right after a rebalance: its recovery resumes the source
partitions before it seeks them to the committed offsets, the fetcher hands records to the
agents' queues, and the queues are then cleared while the read offset says they were
delivered; records below that read offset are dropped when fetched again. Its commit then
passes a single missing offset (the head-gap check is off by one), so the loss becomes
permanent. The guard below notices a jump in the offsets it is given, reads the skipped
records back from Kafka and hands them to the handler first, before the message that
revealed the gap can be acknowledged (and so before any commit can pass them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from connectors.log_reader import PartitionReader
from connectors.metrics import DELIVERY_GAPS
from streams.processing import SourceMessage

log = logging.getLogger(__name__)


@dataclass
class DeliveryGuard:
    consumer: str
    reader: PartitionReader
    generation: Callable[[], int]  # changes with every rebalance
    expected: dict[TopicPartition, int] = field(default_factory=dict)  # the next offset to hand out
    _generation: int | None = None

    async def admit(self, message: SourceMessage) -> list[SourceMessage]:
        """What to process now, in order: records skipped before `message`, then `message`;
        nothing when `message` was already handed out in this assignment."""
        if self.generation() != self._generation:
            # A new assignment: the consumer restarts from the committed offsets, so do we.
            self._generation = self.generation()
            self.expected.clear()
        tp = TopicPartition(message.topic, message.partition)
        expected = self.expected.get(tp)
        if expected is None:
            expected = await self.reader.committed(tp)
        if message.offset < expected:
            return []
        if message.offset == expected:
            return [message]
        skipped = await self.reader.read(tp, expected, message.offset)
        DELIVERY_GAPS.labels(self.consumer, message.topic).inc(len(skipped))
        log.warning(
            "%s: %s/%d jumped from offset %d to %d; processing the %d skipped record(s) first",
            self.consumer,
            message.topic,
            message.partition,
            expected,
            message.offset,
            len(skipped),
        )
        return [SourceMessage(r.topic, r.partition, r.offset, r.key, r.value, r.headers) for r in skipped] + [message]

    def done(self, message: SourceMessage) -> None:
        tp = TopicPartition(message.topic, message.partition)
        self.expected[tp] = max(self.expected.get(tp, 0), message.offset + 1)

    def next_offset(self, tp: TopicPartition) -> int | None:
        return self.expected.get(tp)
