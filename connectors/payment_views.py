"""Queries on the payment read views, plus the table the payment API writes itself:
refund reservations (idempotency keys are connectors.idempotency_keys)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg


def payment_json(
    row: asyncpg.Record, operations: list[asyncpg.Record] | None = None, refunds: list[asyncpg.Record] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(row["id"]),
        "user_id": str(row["user_id"]),
        "amount": row["amount"],
        "currency": row["currency"],
        "payment_method_type": row["method"],
        "wallet_id": None if row["wallet_id"] is None else str(row["wallet_id"]),
        "provider": row["provider"],
        "description": row["description"],
        "status": row["status"],
        "reason_code": row["reason_code"],
        "reason": row["reason"],
        "refunded_amount": row["refunded_amount"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }
    if operations is not None:
        body["operations"] = [operation_json(op) for op in operations]
    if refunds is not None:
        body["refunds"] = [refund_json(refund) for refund in refunds]
    return body


def refund_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "amount": row["amount"],
        "currency": row["currency"],
        "status": row["status"],
        "reason": row["reason"],
        "failure_code": row["failure_code"],
        "failure_reason": row["failure_reason"],
        "requested_at": row["created_at"].isoformat(),
        "decided_at": None if row["decided_at"] is None else row["decided_at"].isoformat(),
    }


def operation_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "kind": row["kind"],
        "status": row["status"],
        "amount": row["amount"],
        "currency": row["currency"],
        "source": row["source"],
        "reference": row["reference"],
        "failure_code": row["failure_code"],
        "failure_reason": row["failure_reason"],
        "inconsistent": row["inconsistent"],
        "created_at": row["created_at"].isoformat(),
    }


async def get_payment(pool: asyncpg.Pool, payment_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM payments WHERE id = $1", payment_id)


async def list_operations(pool: asyncpg.Pool, payment_id: str) -> list[asyncpg.Record]:
    return list(
        await pool.fetch("SELECT * FROM payment_operations WHERE payment_id = $1 ORDER BY created_at, id", payment_id)
    )


async def list_refunds(pool: asyncpg.Pool, payment_id: str) -> list[asyncpg.Record]:
    return list(
        await pool.fetch("SELECT * FROM payment_refunds WHERE payment_id = $1 ORDER BY created_at, id", payment_id)
    )


async def get_refund(db: asyncpg.Pool | asyncpg.Connection, refund_id: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM payment_refunds WHERE id = $1", refund_id)


async def reserve_refund(
    conn: asyncpg.Connection,
    payment_id: str,
    refund_id: str,
    amount: int | None,
    currency: str,
    total: int,
    reason: str | None,
    requested_at: dt.datetime,
) -> tuple[str, int]:
    """Inside the caller's transaction: ('ok', amount), ('already_refunded', 0) or ('exceeds', left).

    A per-payment advisory lock serialises concurrent refund requests of one payment. A
    failed refund holds nothing: what it asked for can be refunded again.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", payment_id)
    reserved = await conn.fetchval(
        "SELECT COALESCE(sum(amount), 0)::bigint FROM payment_refunds WHERE payment_id = $1 AND status <> 'failed'",
        payment_id,
    )
    left = total - reserved
    if left <= 0:
        return "already_refunded", 0
    wanted = left if amount is None else amount
    if wanted > left:
        return "exceeds", left
    await conn.execute(
        "INSERT INTO payment_refunds (id, payment_id, amount, currency, reason, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        refund_id,
        payment_id,
        wanted,
        currency,
        reason,
        requested_at,
    )
    return "ok", wanted
