"""How every agent handles one message: decode, retry, and dead-letter only what is the
message's fault, so that one bad message never blocks its partition and an outage never
dead-letters good ones.

faust acks and skips a message whose handler raised; we catch first. A failure of the
infrastructure (the broker, a topic missing from metadata, a table's changelog not yet
known) pauses the partition: the message is retried with back-off for as long as the
outage lasts, and the worker reports itself unready meanwhile. Any other failure is
retried a bounded number of times; if it still fails while the infrastructure is
healthy, it is the message's fault and lands in `payment.dlq` with its reason, attempt
count and original bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaError
from faust.exceptions import PartitionsMismatch

from connectors.avro import EventDecodeError
from connectors.metrics import DEAD_LETTERS, EVENT_LATENCY, EVENTS_PROCESSED, PROCESSING_PAUSES, PROCESSING_RETRIES
from connectors.otel import span
from connectors.topics import PAYMENT_DLQ
from connectors.tracing import (
    current_request_id,
    current_traceparent,
    fields_of,
    from_headers,
    log_fields,
    request_id_from_headers,
)
from domain.ids import derive_id
from streams.envelope import command_record, new_meta

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[None]]
# A probe of the infrastructure a handler depends on: a description of what is wrong, or None.
HealthProbe = Callable[[], Awaitable[str | None]]

INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    KafkaError,
    PartitionsMismatch,  # a changelog topic not (yet) in the consumer's metadata
    ConnectionError,
    TimeoutError,
    OSError,
)


def is_infrastructure(exc: BaseException) -> bool:
    return isinstance(exc, INFRASTRUCTURE_ERRORS)


async def healthy() -> str | None:
    return None


@dataclass(frozen=True)
class SourceMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: object = None


@dataclass
class Processor:
    """Runs a handler over decoded events: bounded retries for the message's faults, a pause
    for the infrastructure's, and a dead-letter exit."""

    consumer: str
    decode: Callable[[bytes], dict[str, Any]]
    send: Callable[[str, bytes | None, dict[str, Any]], Awaitable[None]]
    max_attempts: int = 3
    backoff_s: float = 0.2
    probe: HealthProbe = healthy
    max_pause_backoff_s: float = 10.0
    # (topic/partition) -> why it is paused; read by the readiness page.
    paused: dict[str, str] = field(default_factory=dict)

    async def process(self, message: SourceMessage, handler: Handler) -> bool:
        """True when handled, False when dead-lettered."""
        with span(
            f"{self.consumer} {message.topic}",
            from_headers(message.headers),
            **{"messaging.destination.name": message.topic},
        ) as traceparent:
            token = current_traceparent.set(traceparent)
            # What the step publishes carries the request id of what it consumed.
            request_token = current_request_id.set(request_id_from_headers(message.headers))
            fields_token = log_fields.set({})
            started = time.perf_counter()
            try:
                return await self._process(message, handler)
            finally:
                EVENT_LATENCY.labels(self.consumer).observe(time.perf_counter() - started)
                log_fields.reset(fields_token)
                current_request_id.reset(request_token)
                current_traceparent.reset(token)

    async def _process(self, message: SourceMessage, handler: Handler) -> bool:
        try:
            event = self.decode(message.value)
        except EventDecodeError as exc:
            await self.dead_letter(message, exc, attempts=1)
            EVENTS_PROCESSED.labels(self.consumer, "undecodable", "dead_lettered").inc()
            return False
        event_type = event["envelope"]["event_type"]
        log_fields.set(fields_of(event))
        where = f"{message.topic}/{message.partition}"
        attempts = 0
        pauses = 0
        try:
            while True:
                try:
                    await handler(event)
                    EVENTS_PROCESSED.labels(self.consumer, event_type, "handled").inc()
                    return True
                except Exception as exc:  # noqa: BLE001 - classified below: pause, retry or dead-letter
                    problem = await self._infrastructure_problem(exc, attempts + 1)
                    if problem is not None:
                        pauses += 1
                        await self.pause(message, problem, pauses)
                        continue
                    attempts += 1
                    if attempts >= self.max_attempts:
                        await self.dead_letter(message, exc, attempts=attempts)
                        EVENTS_PROCESSED.labels(self.consumer, event_type, "dead_lettered").inc()
                        return False
                    PROCESSING_RETRIES.labels(self.consumer, message.topic, "message").inc()
                    log.warning(
                        "%s: attempt %d of %s@%d failed: %r; retrying",
                        self.consumer,
                        attempts,
                        where,
                        message.offset,
                        exc,
                    )
                    await asyncio.sleep(self.backoff_s * attempts)
        finally:
            self.paused.pop(where, None)

    async def _infrastructure_problem(self, exc: Exception, attempt: int) -> str | None:
        """Why this failure is the infrastructure's, or None when it may be the message's.

        The probe runs only before a dead letter, so a failure that repeats while the
        broker or a topic is away is never blamed on the message."""
        if is_infrastructure(exc):
            return f"{type(exc).__name__}: {exc}"
        if attempt < self.max_attempts:
            return None
        return await self.probe()

    async def pause(self, message: SourceMessage, problem: str, pauses: int) -> None:
        """Hold this message's partition for a back-off; readiness reports it meanwhile."""
        where = f"{message.topic}/{message.partition}"
        if where not in self.paused:
            PROCESSING_PAUSES.labels(self.consumer, message.topic).inc()
        PROCESSING_RETRIES.labels(self.consumer, message.topic, "infrastructure").inc()
        self.paused[where] = problem
        delay = min(self.max_pause_backoff_s, self.backoff_s * 2 ** min(pauses, 10))
        log.error(
            "%s: infrastructure failure at %s@%d (%s); partition paused, retrying in %.1fs",
            self.consumer,
            where,
            message.offset,
            problem,
            delay,
        )
        await asyncio.sleep(delay)

    async def dead_letter(self, message: SourceMessage, error: Exception, attempts: int) -> None:
        """Publish the dead letter; while the broker refuses it, the partition stays paused."""
        pauses = 0
        while True:
            try:
                return await self._dead_letter(message, error, attempts)
            except Exception as exc:  # noqa: BLE001 - not even a dead letter may be lost
                pauses += 1
                await self.pause(message, f"dead letter not written: {exc!r}", pauses)

    async def _dead_letter(self, message: SourceMessage, error: Exception, attempts: int) -> None:
        log.error(
            "%s: dead-lettering %s@%d/%d after %d attempt(s): %r",
            self.consumer,
            message.topic,
            message.partition,
            message.offset,
            attempts,
            error,
        )
        DEAD_LETTERS.labels(self.consumer, type(error).__name__).inc()
        await self.send(PAYMENT_DLQ.name, message.key, dead_letter_record(message, error, attempts, self.consumer))


def dead_letter_record(message: SourceMessage, error: BaseException, attempts: int, consumer: str) -> dict[str, Any]:
    """The DeadLetter event for `message`: where it came from, its original bytes, why it was given up.

    Its id derives from the consumer and the source coordinates, so writing it twice (a crash in
    between) is one letter."""
    event_id = derive_id("DeadLetter", consumer, message.topic, str(message.partition), str(message.offset))
    return command_record(
        "DeadLetter",
        new_meta(event_id=event_id),
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
        key=message.key,
        value=message.value,
        error_type=type(error).__name__,
        error_message=str(error)[:2000],
        attempts=attempts,
        consumer=consumer,
    )
