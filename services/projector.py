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
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

from connectors.avro import EventDecodeError, make_codec
from connectors.config import Config, load_config
from connectors.postgres import create_pool, migrate
from connectors.projections import PAYMENT_VIEWS, WALLET_VIEWS, Projection
from services.logs import setup_logging
from streams.topics import (
    PAYMENT_CREATED,
    PAYMENT_FAILED,
    PAYMENT_OPERATION_COMPLETED,
    PAYMENT_OPERATION_INCONSISTENT,
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
)


class SeekToStoredPositions(ConsumerRebalanceListener):
    def __init__(self, consumer: AIOKafkaConsumer, pool: asyncpg.Pool, projection: Projection) -> None:
        self.consumer, self.pool, self.projection = consumer, pool, projection

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        async with self.pool.acquire() as conn:
            positions = await self.projection.positions(conn)
        for tp in assigned:
            last = positions.get((tp.topic, tp.partition))
            if last is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, last + 1)


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
            async with pool.acquire() as conn:
                for tp, messages in batches.items():
                    decoded: list[tuple[int, dict[str, Any] | None]] = []
                    for message in messages:
                        try:
                            decoded.append((message.offset, codec.decode(message.value)))
                        except EventDecodeError as exc:
                            log.error("skipping undecodable %s@%d/%d: %s", tp.topic, tp.partition, message.offset, exc)
                            decoded.append((message.offset, None))
                    await projection.apply_batch(conn, tp.topic, tp.partition, decoded)
            await consumer.commit({tp: msgs[-1].offset + 1 for tp, msgs in batches.items()})
    finally:
        await consumer.stop()


async def main() -> None:
    config = load_config()
    setup_logging(config, "projector")
    await migrate(config.postgres)
    pool = await create_pool(config.postgres)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.gather(*(run_projection(config, p, pool, stop) for p in PROJECTIONS))
    finally:
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
