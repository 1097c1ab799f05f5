"""The projector: a consumer group that writes the PostgreSQL read views.

Positions live in PostgreSQL (projection_offsets), committed with the rows; on
every assignment the consumer seeks to them, so Kafka's own committed offsets are
only informational (they make lag visible to the consumer-group tools).

No single event stops a projection. An outage (the database or the broker away) is
waited out: the batch is retried from the stored offsets with fresh connections. An
event that PostgreSQL refuses on its own, again and again while the database answers,
goes to `payment.dlq` (consumer `projector:<projection>`) with the error, its
coordinates and original bytes, and the projection moves past it; `payments dlq replay`
applies it again once the cause is fixed.

    python -m services.projector
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from connectors.avro import EventDecodeError, make_codec
from connectors.config import Config, load_config
from connectors.credentials import PROJECTOR
from connectors.event_loop import use_event_loop
from connectors.kafka_acl import PROJECTOR_GROUP_PREFIX
from connectors.kafka_security import kafka_access
from connectors.logs import setup_logging
from connectors.metrics import (
    DEAD_LETTERS,
    metrics_handler,
)
from connectors.pg_roles import PROJECTOR as PROJECTOR_ROLE
from connectors.postgres import create_pool, pending_migrations
from connectors.projections import PAYMENT_VIEWS, REFUND_RESERVATIONS, WALLET_VIEWS, Projection, ProjectionNotReady
from connectors.topics import (
    PAYMENT_CREATED,
    PAYMENT_DLQ,
    PAYMENT_FAILED,
    PAYMENT_OPERATION_COMPLETED,
    PAYMENT_OPERATION_INCONSISTENT,
    PAYMENT_REFUND_FAILED,
    PAYMENT_REFUND_REQUESTED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCEEDED,
    WALLET_BALANCE_UPDATE,
    WALLET_MOVEMENT_UPDATES,
    WALLET_PAYMENT_OPERATIONS,
)
from services.http import answers, health, readiness
from services.projection_health import ProjectionHealth
from streams.processing import SourceMessage, dead_letter_record

log = logging.getLogger("projector")
FETCH_MIN_BYTES = 64 * 1024
FETCH_WAIT_MS = 50

PAYMENT_TOPICS = (
    PAYMENT_CREATED,
    PAYMENT_SUCCEEDED,
    PAYMENT_FAILED,
    PAYMENT_REFUNDED,
    PAYMENT_OPERATION_COMPLETED,
    WALLET_PAYMENT_OPERATIONS,
    PAYMENT_OPERATION_INCONSISTENT,
)
PROJECTIONS = (
    Projection("wallet_views", (WALLET_MOVEMENT_UPDATES.name, WALLET_BALANCE_UPDATE.name), WALLET_VIEWS),
    Projection("payment_views", tuple(t.name for t in PAYMENT_TOPICS), PAYMENT_VIEWS),
    # A refund's reservation, then its outcome: the request first, so an outcome rarely waits for it.
    Projection(
        "refund_reservations",
        (PAYMENT_REFUND_REQUESTED.name, PAYMENT_REFUNDED.name, PAYMENT_REFUND_FAILED.name),
        REFUND_RESERVATIONS,
    ),
)

# Failures that say nothing about the event: the database or the network is away, or the
# schema is not what the code expects (a migration missing). Wait them out; never dead-letter.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.SyntaxOrAccessError,
    asyncpg.exceptions.PostgresSystemError,
)
MAX_BACKOFF_S = 10.0
COMMIT_EVERY_S = 1.0
ALL_PARTITIONS = "all partitions"


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, OUTAGE_ERRORS)


class SeekToStoredPositions(ConsumerRebalanceListener):
    def __init__(
        self, consumer: AIOKafkaConsumer, pool: asyncpg.Pool, projection: Projection, health: ProjectionHealth
    ) -> None:
        self.consumer, self.pool, self.projection, self.health = consumer, pool, projection, health

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self.health.partitions.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await seek_to_stored(self.consumer, self.pool, self.projection, self.health, list(assigned))


async def seek_to_stored(
    consumer: AIOKafkaConsumer, pool: asyncpg.Pool, projection: Projection, health: ProjectionHealth, tps: list[Any]
) -> None:
    async with pool.acquire() as conn:
        positions = await projection.positions(conn)
    beginnings = await consumer.beginning_offsets(tps) if tps else {}
    for tp in tps:
        last = positions.get((tp.topic, tp.partition))
        health.progress(tp).applied = beginnings[tp] - 1 if last is None else last
        consumer.seek(tp, beginnings[tp] if last is None else last + 1)


@dataclass
class Projector:
    """Runs one projection: batches in order, outages waited out, poison dead-lettered."""

    config: Config
    projection: Projection
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    health: ProjectionHealth
    consumer: AIOKafkaConsumer = field(init=False)
    not_ready_since: dict[tuple[str, int, int], float] = field(default_factory=dict)
    # Partitions held back for a cause on another topic: resume time, and why.
    waiting: dict[TopicPartition, tuple[float, str]] = field(default_factory=dict)
    tries: dict[TopicPartition, int] = field(default_factory=dict)
    # Where the views stand that Kafka has not been told yet, and when it last was.
    uncommitted: dict[TopicPartition, int] = field(default_factory=dict)
    committed_at: float = 0.0

    @property
    def consumer_name(self) -> str:
        return f"projector:{self.projection.name}"

    async def run(self, stop: asyncio.Event) -> None:
        codec = make_codec(self.config.kafka.schema_registry_url or None)
        self.consumer = AIOKafkaConsumer(
            **kafka_access(self.config, PROJECTOR).aiokafka(),
            group_id=f"{PROJECTOR_GROUP_PREFIX}{self.projection.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=1000,
            # The broker holds a fetch until it has this much or FETCH_WAIT_MS passed: a few
            # fetches a second with many records each, not one per event, at the price of up
            # to FETCH_WAIT_MS more lag in the views.
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )
        listener = SeekToStoredPositions(self.consumer, self.pool, self.projection, self.health)
        self.consumer.subscribe(self.projection.topics, listener=listener)
        await self.consumer.start()
        log.info("projection %s reading %s", self.projection.name, ", ".join(self.projection.topics))
        failures = 0
        try:
            while not stop.is_set():
                self.resume_waiting()
                batches = await self.consumer.getmany(timeout_ms=200, max_records=1000)
                self.health.publish()
                if not batches:
                    await self.commit(force=True)
                    continue
                try:
                    await self.apply(codec, batches)
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - a projector must outlive any outage
                    # The views only move with their stored offsets, so after a failure we go
                    # back to those and read again; nothing is lost or applied twice.
                    failures += 1
                    await self.wait_out(exc, failures)
            await self.commit(force=True)
        finally:
            await self.consumer.stop()

    async def apply(self, codec: Any, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        # Causes first: a payment's creation before its refund (topic order of the projection),
        # so a fresh batch seldom needs ProjectionNotReady.
        ordered = sorted(batches.items(), key=lambda b: (self.projection.topics.index(b[0].topic), b[0].partition))
        for tp, messages in ordered:
            self.health.fetched(self.consumer, tp, messages)
        decoded = {tp: decode_all(codec, tp, messages) for tp, messages in ordered}  # once, whatever follows
        async with self.pool.acquire() as conn:
            try:
                # The usual case: everything fetched, all partitions, in one transaction.
                await self.projection.apply_batches(conn, {(tp.topic, tp.partition): decoded[tp] for tp, _ in ordered})
                done = [tp for tp, _ in ordered]
            except Exception as exc:
                if is_outage(exc):
                    raise
                # Something fetched is refused or early: partition by partition, to find it.
                done = await self.apply_each(conn, ordered, decoded)
        for tp in done:
            self.health.applied(tp, batches[tp][-1])
            self.waiting.pop(tp, None)
            self.health.retrying.pop(f"{tp.topic}/{tp.partition}", None)
            self.uncommitted[tp] = batches[tp][-1].offset + 1
        self.health.retrying.pop(ALL_PARTITIONS, None)
        await self.commit(force=False)

    async def apply_each(
        self,
        conn: asyncpg.Connection,
        ordered: list[tuple[TopicPartition, list[ConsumerRecord]]],
        decoded: dict[TopicPartition, list[tuple[int, dict[str, Any] | None]]],
    ) -> list[TopicPartition]:
        """Each partition in its own transaction; one that fails, event by event. The partitions applied."""
        done = []
        for tp, messages in ordered:
            try:
                await self.projection.apply_batch(conn, tp.topic, tp.partition, decoded[tp])
            except Exception as exc:
                if is_outage(exc):
                    raise
                try:
                    await self.apply_one_by_one(conn, tp, messages, decoded[tp])
                except ProjectionNotReady as early:
                    self.wait_for_cause(tp, early)
                    continue
            done.append(tp)
        return done

    async def commit(self, force: bool) -> None:
        """Tell Kafka where the views stand, at most every COMMIT_EVERY_S (and when idle): those
        offsets only show lag to the group tools; the views' own are stored with their rows."""
        if not self.uncommitted or (not force and time.monotonic() - self.committed_at < COMMIT_EVERY_S):
            return
        offsets, self.uncommitted = self.uncommitted, {}
        self.committed_at = time.monotonic()
        assigned = self.consumer.assignment()
        try:
            await self.consumer.commit({tp: offset for tp, offset in offsets.items() if tp in assigned})
        except KafkaError as exc:  # a rebalance in between: the next commit says it again
            log.info("projection %s: commit to Kafka skipped: %r", self.projection.name, exc)

    def wait_for_cause(self, tp: TopicPartition, early: ProjectionNotReady) -> None:
        """Hold this partition alone (the others keep moving) and read it again from its stored
        offset after a back-off: its event waits for a cause on another topic."""
        tries = self.tries[tp] = self.tries.get(tp, 0) + 1 if tp in self.waiting else 1
        self.waiting[tp] = (time.monotonic() + min(5.0, 0.25 * 2**tries), f"{type(early).__name__}: {early}")
        self.health.retrying[f"{tp.topic}/{tp.partition}"] = self.waiting[tp][1]
        self.consumer.seek(tp, self.health.progress(tp).applied + 1)
        self.consumer.pause(tp)

    def resume_waiting(self) -> None:
        now = time.monotonic()
        for tp, (resume_at, _) in list(self.waiting.items()):
            if resume_at <= now and tp in self.consumer.assignment():
                self.consumer.resume(tp)

    async def apply_one_by_one(
        self,
        conn: asyncpg.Connection,
        tp: TopicPartition,
        messages: list[ConsumerRecord],
        decoded: list[tuple[int, dict[str, Any] | None]],
    ) -> None:
        for message, one in zip(messages, decoded, strict=True):
            refusal: Exception | None = None
            for _ in range(2):  # the event's own fault only if it fails again
                try:
                    await self.projection.apply_batch(conn, tp.topic, tp.partition, [one])
                    refusal = None
                    break
                except ProjectionNotReady as exc:
                    if not self.patience_spent(message):
                        raise  # its cause is on another topic: wait for it
                    refusal = exc
                    break
                except Exception as exc:
                    if is_outage(exc):
                        raise
                    refusal = exc
                    await conn.fetchval("SELECT 1")  # the database answers: the event is at fault
            self.not_ready_since.pop((message.topic, message.partition, message.offset), None)
            if refusal is not None:
                await self.dead_letter(conn, message, refusal, attempts=2)

    def patience_spent(self, message: ConsumerRecord) -> bool:
        """An event whose cause has not arrived for twice the stall time never will (its cause was
        itself dead-lettered, or never written): then it is dead-lettered, not waited on for ever."""
        since = self.not_ready_since.setdefault((message.topic, message.partition, message.offset), time.monotonic())
        return time.monotonic() - since > 2 * self.config.processing.stall_after_s

    async def dead_letter(
        self, conn: asyncpg.Connection, message: ConsumerRecord, error: BaseException, attempts: int
    ) -> None:
        """Publish the letter, then move the stored offset past the event, in that order: a crash
        in between writes the same letter again (same id), never loses it."""
        source = SourceMessage(message.topic, message.partition, message.offset, message.key, message.value)
        log.error(
            "%s: dead-lettering %s@%d/%d: %r",
            self.consumer_name,
            message.topic,
            message.partition,
            message.offset,
            error,
        )
        record = dead_letter_record(source, error, attempts, self.consumer_name)
        codec = make_codec(self.config.kafka.schema_registry_url or None)
        await self.producer.send_and_wait(PAYMENT_DLQ.name, codec.encode(record), key=message.key)
        DEAD_LETTERS.labels(self.consumer_name, type(error).__name__).inc()
        self.health.dead_letters += 1
        await self.projection.apply_batch(conn, message.topic, message.partition, [(message.offset, None)])

    async def wait_out(self, exc: Exception, failures: int) -> None:
        """Back off, drop every connection (one that lived through a database restart can be broken
        in odd ways), and go back to the stored offsets. An event whose cause never arrives (its
        cause was itself dead-lettered) is dead-lettered once it has waited long enough."""
        delay = min(MAX_BACKOFF_S, 0.5 * 2 ** min(failures, 5))
        self.health.retrying[ALL_PARTITIONS] = f"{type(exc).__name__}: {exc}"
        log.error("projection %s: %r; retrying from the stored offsets in %.1fs", self.projection.name, exc, delay)
        await self.pool.expire_connections()
        await asyncio.sleep(delay)
        await self.retry_seek()

    async def retry_seek(self) -> None:
        while True:
            try:
                await seek_to_stored(
                    self.consumer, self.pool, self.projection, self.health, list(self.consumer.assignment())
                )
                return
            except Exception as exc:  # noqa: BLE001 - keep trying until the outage ends
                self.health.retrying[ALL_PARTITIONS] = f"{type(exc).__name__}: {exc}"
                log.error("projection %s: still failing (%r); retrying in 1 s", self.projection.name, exc)
                await asyncio.sleep(1)


def decode_all(codec: Any, tp: Any, messages: list[Any]) -> list[tuple[int, dict[str, Any] | None]]:
    decoded: list[tuple[int, dict[str, Any] | None]] = []
    for message in messages:
        try:
            decoded.append((message.offset, codec.decode(message.value)))
        except EventDecodeError as exc:
            log.error("skipping undecodable %s@%d/%d: %s", tp.topic, tp.partition, message.offset, exc)
            decoded.append((message.offset, None))
    return decoded


async def serve_pages(config: Config, pool: asyncpg.Pool, healths: list[ProjectionHealth]) -> web.AppRunner:
    async def stalls(_: web.Request) -> dict[str, Any]:
        return {f"{h.name}: stalled partitions": h.stalled() for h in healths if h.stalled()}

    # Unready while PostgreSQL does not answer or a partition behind its end has not advanced for
    # processing.stall_after_s; the body also says what is being retried (unready once it stalls
    # a partition) and how many events each projection dead-lettered since it started.
    ready = readiness(
        answers("postgres", lambda _: pool.fetchval("SELECT 1")),
        stalls,
        details=lambda: {
            "retrying": {h.name: dict(h.retrying) for h in healths if h.retrying},
            "dead_letters": {h.name: h.dead_letters for h in healths},
        },
    )

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics_handler), web.get("/health", health), web.get("/ready", ready)])
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", config.projector.metrics_port).start()
    return runner


async def main() -> None:
    config = load_config()
    setup_logging(config, "projector")
    pool = await create_pool(config, PROJECTOR_ROLE)
    pending = await pending_migrations(pool)
    if pending:  # the projector may not create tables: setup migrates, as the owner
        await pool.close()
        raise SystemExit(f"migrations not applied: {', '.join(pending)}; run `make run` or devtools.devctl setup")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    producer = AIOKafkaProducer(**kafka_access(config, PROJECTOR).aiokafka(), acks="all", enable_idempotence=True)
    await producer.start()
    projectors = [
        Projector(config, p, pool, producer, ProjectionHealth(p.name, config.processing.stall_after_s))
        for p in PROJECTIONS
    ]
    runner = await serve_pages(config, pool, [p.health for p in projectors])
    try:
        await asyncio.gather(*(p.run(stop) for p in projectors))
    finally:
        await runner.cleanup()
        await producer.stop()
        await pool.close()


if __name__ == "__main__":
    use_event_loop(load_config())
    asyncio.run(main())
