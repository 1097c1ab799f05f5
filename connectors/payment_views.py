"""Queries on the payment read views, plus the table the payment API writes itself:
refund reservations (idempotency keys are connectors.idempotency_keys)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
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
        "deadline_at": _iso_or_none(row["deadline_at"]),
    }
    if operations is not None:
        body["operations"] = [operation_json(op) for op in operations]
    if refunds is not None:
        body["refunds"] = [refund_json(refund) for refund in refunds]
    return body


def decided_json(
    request: dict[str, Any], payment_id: str, created_ms: int, event: dict[str, Any], deadline_ms: int | None = None
) -> dict[str, Any]:
    """A new payment as `payment_json` shows it, from the request and its terminal event alone:
    what the views will hold once the projector has applied that event."""
    failed = event["envelope"]["event_type"] == "PaymentFailed"
    op = event.get("operation")
    operations = (
        []
        if op is None
        else [
            {
                "id": op["operation_id"],
                "kind": op["kind"],
                "status": op["status"],
                "amount": op["amount"]["amount"],
                "currency": op["amount"]["currency"],
                "source": op["source"],
                "reference": op["reference"],
                "failure_code": op["failure_code"],
                "failure_reason": op["failure_reason"],
                "inconsistent": False,
                "created_at": _iso(op["occurred_at"]),
                "deadline_at": None,
            }
        ]
    )
    return {
        "id": payment_id,
        "user_id": request["user_id"],
        "amount": request["amount"],
        "currency": request["currency"],
        "payment_method_type": request["payment_method_type"],
        "wallet_id": request["wallet_id"],
        "provider": request["provider"],
        "description": request["description"],
        "status": "failed" if failed else "completed",
        "reason_code": event["reason_code"] if failed else None,
        "reason": event["reason"] if failed else None,
        "refunded_amount": 0,
        "created_at": _iso(created_ms),
        "updated_at": _iso(event["envelope"]["occurred_at"]),
        "deadline_at": None if deadline_ms is None else _iso(deadline_ms),
        "operations": operations,
        "refunds": [],
    }


def _iso(millis: int) -> str:
    return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC).isoformat()


def _iso_or_none(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


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
        # Until when the provider's webhook is waited for (a pending charge or refund).
        "deadline_at": _iso_or_none(row["deadline_at"]),
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


@dataclass(frozen=True)
class PaymentSearch:
    """What a payment search keeps: each filter given, all of them at once."""

    user_id: str | None = None
    status: str | None = None
    provider: str | None = None
    method: str | None = None
    created_from: dt.datetime | None = None  # inclusive
    created_to: dt.datetime | None = None  # exclusive

    def where(self) -> tuple[list[str], list[Any]]:
        clauses, args = [], []
        for column in ("user_id", "status", "provider", "method"):
            if getattr(self, column) is not None:
                args.append(getattr(self, column))
                clauses.append(f"{column} = ${len(args)}")
        for bound, operator in ((self.created_from, ">="), (self.created_to, "<")):
            if bound is not None:
                args.append(bound)
                clauses.append(f"created_at {operator} ${len(args)}")
        return clauses, args


async def search_payments(
    pool: asyncpg.Pool, search: PaymentSearch, limit: int, starting_after: str | None, owner: str | None
) -> tuple[list[asyncpg.Record], bool] | None:
    """Newest first by (created_at, id), after the payment `starting_after` names; None when it
    names no payment (of `owner`, when given). Only the filters given become clauses, so each
    query plans onto payments_created or payments_user_created (migration 0006)."""
    clauses, args = search.where()
    if starting_after is not None:
        cursor = await pool.fetchrow(
            "SELECT created_at, id FROM payments WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2::uuid)",
            starting_after,
            owner,
        )
        if cursor is None:
            return None
        args += [cursor["created_at"], cursor["id"]]
        clauses.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    rows = await pool.fetch(
        f"SELECT * FROM payments {where}ORDER BY created_at DESC, id DESC LIMIT ${len(args)}", *args
    )
    return rows[:limit], len(rows) > limit
