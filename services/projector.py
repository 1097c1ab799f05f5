"""The projector: a consumer group that writes the PostgreSQL read views.

Positions live in PostgreSQL (projection_offsets), committed with the rows; on
every assignment the consumer seeks to them, so Kafka's own committed offsets are
only informational (they make lag visible to the consumer-group tools).

    python -m services.projector
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

import asyncpg
from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

from connectors.avro import EventDecodeError, make_codec
from connectors.config import Config, load_config
from connectors.logs import setup_logging
from connectors.metrics import PROJECTION_LAG_MESSAGES, PROJECTION_LAG_SECONDS, metrics_handler
from connectors.postgres import create_pool, migrate
from connectors.projections import PAYMENT_VIEWS, REFUND_RESERVATIONS, WALLET_VIEWS, Projection
from services.http import health
from streams.topics import (
    PAYMENT_CREATED,
    PAYMENT_FAILED,
    PAYMENT_OPERATION_COMPLETED,
    PAYMENT_OPERATION_INCONSISTENT,
    PAYMENT_REFUND,
    PAYMENT_REFUND_FAILED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCESS,
    WALLET_BALANCE_UPDATE,
    WALLET_MOVEMENT_UPDATES,
)

log = logging.getLogger("projector")

PAYMENT_TOPICS = (
    PAYMENT_CREATED,
    PAYMENT_SUCCESS,
    PAYMENT_FAILED,
    PAYMENT_REFUNDED,
    PAYMENT_OPERATION_COMPLETED,
    PAYMENT_OPERATION_INCONSISTENT,
)
PROJECTIONS = (
    Projection("wallet_views", (WALLET_MOVEMENT_UPDATES.name, WALLET_BALANCE_UPDATE.name), WALLET_VIEWS),
    Projection("payment_views", tuple(t.name for t in PAYMENT_TOPICS), PAYMENT_VIEWS),
    # The request first, then its outcomes (causes first, as above).
    Projection(
        "refund_reservations",
        (PAYMENT_REFUND.name, PAYMENT_REFUNDED.name, PAYMENT_REFUND_FAILED.name),
        REFUND_RESERVATIONS,
    ),
)


class SeekToStoredPositions(ConsumerRebalanceListener):
    def __init__(self, consumer: AIOKafkaConsumer, pool: asyncpg.Pool, projection: Projection) -> None:
        self.consumer, self.pool, self.projection = consumer, pool, projection

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await seek_to_stored(self.consumer, self.pool, self.projection, list(assigned))


async def seek_to_stored(
    consumer: AIOKafkaConsumer, pool: asyncpg.Pool, projection: Projection, tps: list[Any]
) -> None:
    async with pool.acquire() as conn:
        positions = await projection.positions(conn)
    beginnings = await consumer.beginning_offsets(tps) if tps else {}
    for tp in tps:
        last = positions.get((tp.topic, tp.partition))
        consumer.seek(tp, beginnings[tp] if last is None else last + 1)


def observe_lag(consumer: AIOKafkaConsumer, projection: Projection, tp: Any, last: Any) -> None:
    highwater = consumer.highwater(tp)
    if highwater is not None:
        PROJECTION_LAG_MESSAGES.labels(projection.name, tp.topic, str(tp.partition)).set(
            max(0, highwater - 1 - last.offset)
        )
    PROJECTION_LAG_SECONDS.labels(projection.name).set(max(0.0, time.time() - last.timestamp / 1000))


async def run_projection(config: Config, projection: Projection, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    codec = make_codec(config.kafka.schema_registry_url or None)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=config.kafka.bootstrap_servers,
        group_id=f"projector-{projection.name}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=1000,
    )
    consumer.subscribe(projection.topics, listener=SeekToStoredPositions(consumer, pool, projection))
    await consumer.start()
    log.info("projection %s reading %s", projection.name, ", ".join(projection.topics))
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            if not batches:
                continue
            try:
                async with pool.acquire() as conn:
                    # Causes first: a payment's creation before its refund (topic order of
                    # the projection), so a fresh batch seldom needs ProjectionNotReady.
                    for tp, messages in sorted(batches.items(), key=lambda b: topic_rank(projection, b[0])):
                        await projection.apply_batch(conn, tp.topic, tp.partition, decode_all(codec, tp, messages))
                        observe_lag(consumer, projection, tp, messages[-1])
                await consumer.commit({tp: msgs[-1].offset + 1 for tp, msgs in batches.items()})
            except Exception as exc:  # noqa: BLE001 - a projector must outlive any outage
                # The views only move with their stored offsets, so after a failure we go
                # back to those and read again; nothing is lost or applied twice. A failure
                # that repeats blocks this projection (and shows as projection lag) rather
                # than skipping data. Connections that lived through a database restart
                # can be broken in odd ways (asyncpg InternalClientError), so drop them all.
                log.error("projection %s: %r; retrying from the stored offsets in 1 s", projection.name, exc)
                pool.expire_connections()
                await asyncio.sleep(1)
                await retry_seek(consumer, pool, projection)
    finally:
        await consumer.stop()


def topic_rank(projection: Projection, tp: Any) -> tuple[int, int]:
    return projection.topics.index(tp.topic), tp.partition


def decode_all(codec: Any, tp: Any, messages: list[Any]) -> list[tuple[int, dict[str, Any] | None]]:
    decoded: list[tuple[int, dict[str, Any] | None]] = []
    for message in messages:
        try:
            decoded.append((message.offset, codec.decode(message.value)))
        except EventDecodeError as exc:
            log.error("skipping undecodable %s@%d/%d: %s", tp.topic, tp.partition, message.offset, exc)
            decoded.append((message.offset, None))
    return decoded


async def retry_seek(consumer: AIOKafkaConsumer, pool: asyncpg.Pool, projection: Projection) -> None:
    while True:
        try:
            await seek_to_stored(consumer, pool, projection, list(consumer.assignment()))
            return
        except Exception as exc:  # noqa: BLE001 - keep trying until the outage ends
            log.error("projection %s: still failing (%r); retrying in 1 s", projection.name, exc)
            await asyncio.sleep(1)


async def serve_metrics(config: Config, pool: asyncpg.Pool) -> web.AppRunner:
    async def ready(_: web.Request) -> web.Response:
        try:
            await pool.fetchval("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure
            return web.json_response({"status": "unready", "problems": {"postgres": repr(exc)}}, status=503)
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics_handler), web.get("/health", health), web.get("/ready", ready)])
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", config.projector.metrics_port).start()
    return runner


async def main() -> None:
    config = load_config()
    setup_logging(config, "projector")
    await migrate(config.postgres)
    pool = await create_pool(config.postgres)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = await serve_metrics(config, pool)
    try:
        await asyncio.gather(*(run_projection(config, p, pool, stop) for p in PROJECTIONS))
    finally:
        await runner.cleanup()
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
