"""PostgreSQL read views projected from the log.

Each projection applies a batch of one partition's messages in one transaction
together with the offset it reached, so a replayed message (offset at or below
the stored one) changes nothing, and a crash mid-batch applies nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg

Apply = Callable[[asyncpg.Connection, dict[str, Any]], Awaitable[None]]


def ts(millis: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC)


async def apply_balance_updated(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    env = event["envelope"]
    await conn.execute(
        """INSERT INTO wallets (id, user_id, currency, balance, version, last_updated, last_event_id,
                                last_movement_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version,
               last_updated = EXCLUDED.last_updated, last_event_id = EXCLUDED.last_event_id,
               last_movement_id = EXCLUDED.last_movement_id
           WHERE wallets.version < EXCLUDED.version""",
        event["wallet_id"],
        event["user_id"],
        event["balance"]["currency"],
        event["balance"]["amount"],
        event["version"],
        ts(env["occurred_at"]),
        env["event_id"],
        event["movement_id"],
    )


async def apply_movement_updated(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    env = event["envelope"]
    await conn.execute(
        """INSERT INTO wallet_movements (id, wallet_id, type, amount, currency, status, reason_code, reason,
               balance_after, wallet_version, reverts_movement_id, reference, description, payment_id,
               created_at, event_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
           ON CONFLICT (id) DO NOTHING""",
        event["movement_id"],
        event["wallet_id"],
        event["type"],
        event["amount"]["amount"],
        event["amount"]["currency"],
        event["status"],
        event["reason_code"],
        event["reason"],
        event["balance_after"],
        event["wallet_version"],
        event["reverts_movement_id"],
        event["reference"],
        event["description"],
        event["payment_id"],
        ts(env["occurred_at"]),
        env["event_id"],
    )


WALLET_VIEWS: dict[str, Apply] = {
    "BalanceUpdated": apply_balance_updated,
    "MovementUpdated": apply_movement_updated,
}


class Projection:
    """A named set of views and the event types that feed them."""

    def __init__(self, name: str, topics: Iterable[str], appliers: dict[str, Apply]) -> None:
        self.name = name
        self.topics = tuple(topics)
        self.appliers = appliers

    async def positions(self, conn: asyncpg.Connection) -> dict[tuple[str, int], int]:
        rows = await conn.fetch(
            "SELECT topic, partition, last_offset FROM projection_offsets WHERE projection = $1", self.name
        )
        return {(r["topic"], r["partition"]): r["last_offset"] for r in rows}

    async def apply_batch(
        self, conn: asyncpg.Connection, topic: str, partition: int, messages: list[tuple[int, dict[str, Any] | None]]
    ) -> int:
        """Apply (offset, decoded event or None for undecodable) in one transaction; return rows applied."""
        applied = 0
        async with conn.transaction():
            stored = await conn.fetchval(
                "SELECT last_offset FROM projection_offsets WHERE projection = $1 AND topic = $2 "
                "AND partition = $3 FOR UPDATE",
                self.name,
                topic,
                partition,
            )
            last = -1 if stored is None else stored
            for offset, event in messages:
                if offset <= last:
                    continue
                if event is not None:
                    apply = self.appliers.get(event["envelope"]["event_type"])
                    if apply is not None:
                        await apply(conn, event)
                        applied += 1
                last = offset
            await conn.execute(
                """INSERT INTO projection_offsets (projection, topic, partition, last_offset)
                   VALUES ($1, $2, $3, $4)
                   ON CONFLICT (projection, topic, partition)
                   DO UPDATE SET last_offset = EXCLUDED.last_offset, updated_at = now()""",
                self.name,
                topic,
                partition,
                last,
            )
        return applied
