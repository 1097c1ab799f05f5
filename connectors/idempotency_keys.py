"""The idempotency_keys table: who claimed which key, for which request, and its answer.

Every decision about a key is taken under its row lock, so two requests with one key
never both run, and a request never reads an answer it did not ask for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

State = Literal["claimed", "conflict", "done", "in_flight"]


@dataclass(frozen=True)
class Claim:
    """claimed: run it (this generation); done: replay the answer; conflict: another
    request holds the key; in_flight: the same request runs elsewhere, wait for it."""

    state: State
    generation: int
    status_code: int | None = None
    response: Any = None


async def claim(
    pool: asyncpg.Pool,
    caller: str,
    key: str,
    endpoint: str,
    request_hash: str,
    window_s: float,
    lock_s: float,
) -> Claim:
    async with pool.acquire() as conn, conn.transaction():
        fresh = await conn.fetchval(
            "INSERT INTO idempotency_keys (caller, key, endpoint, request_hash, locked_at, expires_at) "
            "VALUES ($1, $2, $3, $4, now(), now() + make_interval(secs => $5)) "
            "ON CONFLICT (caller, key) DO NOTHING RETURNING generation",
            caller,
            key,
            endpoint,
            request_hash,
            window_s,
        )
        if fresh is not None:
            return Claim("claimed", fresh)
        row = await conn.fetchrow(
            "SELECT request_hash, generation, status_code, response, expires_at <= now() AS expired, "
            "locked_at IS NULL OR locked_at < now() - make_interval(secs => $3) AS unlocked "
            "FROM idempotency_keys WHERE caller = $1 AND key = $2 FOR UPDATE",
            caller,
            key,
            lock_s,
        )
        if row["expired"]:
            generation = await conn.fetchval(
                "UPDATE idempotency_keys SET endpoint = $3, request_hash = $4, generation = generation + 1, "
                "status_code = NULL, response = NULL, locked_at = now(), created_at = now(), "
                "expires_at = now() + make_interval(secs => $5) WHERE caller = $1 AND key = $2 RETURNING generation",
                caller,
                key,
                endpoint,
                request_hash,
                window_s,
            )
            return Claim("claimed", generation)
        if row["request_hash"] != request_hash:
            return Claim("conflict", row["generation"])
        if row["status_code"] is not None:
            return Claim("done", row["generation"], row["status_code"], json.loads(row["response"]))
        if row["unlocked"]:  # released after a failure, or its holder died: run it again, same ids
            await conn.execute(
                "UPDATE idempotency_keys SET locked_at = now() WHERE caller = $1 AND key = $2", caller, key
            )
            return Claim("claimed", row["generation"])
        return Claim("in_flight", row["generation"])


async def complete(pool: asyncpg.Pool, caller: str, key: str, generation: int, status: int, response: Any) -> None:
    await pool.execute(
        "UPDATE idempotency_keys SET status_code = $4, response = $5::jsonb, locked_at = NULL "
        "WHERE caller = $1 AND key = $2 AND generation = $3",
        caller,
        key,
        generation,
        status,
        json.dumps(response),
    )


async def release(pool: asyncpg.Pool, caller: str, key: str, generation: int) -> None:
    """The request failed without an answer: a retry of the same body may run it again."""
    await pool.execute(
        "UPDATE idempotency_keys SET locked_at = NULL "
        "WHERE caller = $1 AND key = $2 AND generation = $3 AND status_code IS NULL",
        caller,
        key,
        generation,
    )
