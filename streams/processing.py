"""How every agent handles one message: decode, retry a bounded number of times,
then dead-letter, so that one bad message never blocks its partition.

faust acks and skips a message whose handler raised; we catch first, so a failure
is either retried or lands in `payment.dlq` with its reason and original bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from connectors.avro import EventDecodeError
from connectors.metrics import DEAD_LETTERS, EVENT_LATENCY, EVENTS_PROCESSED
from connectors.otel import span
from connectors.tracing import current_traceparent, fields_of, from_headers, log_fields
from domain.ids import derive_id
from streams.envelope import command_record, new_meta
from streams.topics import PAYMENT_DLQ

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[None]]


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
    """Runs a handler over decoded events with bounded retries and a dead-letter exit."""

    consumer: str
    decode: Callable[[bytes], dict[str, Any]]
    send: Callable[[str, bytes | None, dict[str, Any]], Awaitable[None]]
    max_attempts: int = 3
    backoff_s: float = 0.2

    async def process(self, message: SourceMessage, handler: Handler) -> bool:
        """True when handled, False when dead-lettered."""
        with span(
            f"{self.consumer} {message.topic}",
            from_headers(message.headers),
            **{"messaging.destination.name": message.topic},
        ) as traceparent:
            token = current_traceparent.set(traceparent)
            fields_token = log_fields.set({})
            started = time.perf_counter()
            try:
                return await self._process(message, handler)
            finally:
                EVENT_LATENCY.labels(self.consumer).observe(time.perf_counter() - started)
                log_fields.reset(fields_token)
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
        for attempt in range(1, self.max_attempts + 1):
            try:
                await handler(event)
                EVENTS_PROCESSED.labels(self.consumer, event_type, "handled").inc()
                return True
            except Exception as exc:  # noqa: BLE001 - any failure is retried, then dead-lettered
                if attempt == self.max_attempts:
                    await self.dead_letter(message, exc, attempts=attempt)
                    EVENTS_PROCESSED.labels(self.consumer, event_type, "dead_lettered").inc()
                    return False
                log.warning(
                    "%s: attempt %d of %s@%d/%d failed: %r; retrying",
                    self.consumer,
                    attempt,
                    message.topic,
                    message.partition,
                    message.offset,
                    exc,
                )
                await asyncio.sleep(self.backoff_s * attempt)
        return False

    async def dead_letter(self, message: SourceMessage, error: Exception, attempts: int) -> None:
        log.error(
            "%s: dead-lettering %s@%d/%d after %d attempt(s): %r",
            self.consumer,
            message.topic,
            message.partition,
            message.offset,
            attempts,
            error,
        )
        event_id = derive_id("DeadLetter", message.topic, str(message.partition), str(message.offset))
        record = command_record(
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
            consumer=self.consumer,
        )
        DEAD_LETTERS.labels(self.consumer, type(error).__name__).inc()
        await self.send(PAYMENT_DLQ.name, message.key, record)
