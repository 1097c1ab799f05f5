"""Queries on the wallet read views (the write side is connectors.projections)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

MOVEMENT_COLUMNS = (
    "id, wallet_id, type, amount, currency, status, reason_code, reason, balance_after, "
    "wallet_version, reverts_movement_id, reference, description, payment_id, created_at, seq"
)


def wallet_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "balance": row["balance"],
        "currency": row["currency"],
        "user_id": str(row["user_id"]),
        "last_updated": row["last_updated"].isoformat(),
        "version": row["version"],
    }


def movement_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "type": row["type"],
        "amount": row["amount"],
        "currency": row["currency"],
        "wallet_id": str(row["wallet_id"]),
        "created_at": row["created_at"].isoformat(),
        "status": row["status"],
        "reason_code": row["reason_code"],
        "balance_after": row["balance_after"],
        "reverts_movement_id": _str(row["reverts_movement_id"]),
        "reference": row["reference"],
        "description": row["description"],
        "payment_id": _str(row["payment_id"]),
    }


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


async def get_wallet(pool: asyncpg.Pool, wallet_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM wallets WHERE id = $1", wallet_id)


async def get_movement(pool: asyncpg.Pool, movement_id: str, wait_s: float = 0.0) -> asyncpg.Record | None:
    deadline = time.monotonic() + wait_s
    while True:
        row = await pool.fetchrow(f"SELECT {MOVEMENT_COLUMNS} FROM wallet_movements WHERE id = $1", movement_id)
        if row is not None or time.monotonic() >= deadline:
            return row
        await asyncio.sleep(0.02)


async def list_movements(
    pool: asyncpg.Pool, wallet_id: str, limit: int, starting_after: str | None
) -> tuple[list[asyncpg.Record], bool] | None:
    """Newest first; None when the cursor names no movement of this wallet."""
    before = None
    if starting_after is not None:
        before = await pool.fetchval(
            "SELECT seq FROM wallet_movements WHERE id = $1 AND wallet_id = $2", starting_after, wallet_id
        )
        if before is None:
            return None
    rows = await pool.fetch(
        f"SELECT {MOVEMENT_COLUMNS} FROM wallet_movements WHERE wallet_id = $1 AND status = 'applied' "
        "AND ($2::bigint IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3",
        wallet_id,
        before,
        limit + 1,
    )
    return rows[:limit], len(rows) > limit
