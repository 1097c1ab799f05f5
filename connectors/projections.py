"""PostgreSQL read views projected from the log.

Each projection applies a batch of one partition's messages in one transaction
together with the offset it reached, so a replayed message (offset at or below
the stored one) changes nothing, and a crash mid-batch applies nothing. The appliers'
writes are collected and sent as one `executemany` per run of the same statement, so a
batch costs a few round trips, not one per event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import asyncpg

from connectors.batched_writes import BatchedWrites
from domain.ids import derive_id

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


# A payment's status only moves forward, whatever order its topics are read in.
STATUS_RANK = {"initiated": 0, "processing": 1, "completed": 2, "failed": 2, "partially_refunded": 3, "refunded": 4}

UPSERT_PAYMENT = """
    INSERT INTO payments (id, user_id, amount, currency, method, wallet_id, provider, description, status,
                          status_rank, reason_code, reason, created_at, updated_at, deadline_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14)
    ON CONFLICT (id) DO UPDATE SET
        wallet_id = COALESCE(payments.wallet_id, EXCLUDED.wallet_id),
        deadline_at = COALESCE(payments.deadline_at, EXCLUDED.deadline_at),
        provider = COALESCE(payments.provider, EXCLUDED.provider),
        description = COALESCE(payments.description, EXCLUDED.description),
        created_at = LEAST(payments.created_at, EXCLUDED.created_at),
        status = CASE WHEN EXCLUDED.status_rank > payments.status_rank THEN EXCLUDED.status ELSE payments.status END,
        reason_code = CASE WHEN EXCLUDED.status_rank > payments.status_rank THEN EXCLUDED.reason_code
                      ELSE payments.reason_code END,
        reason = CASE WHEN EXCLUDED.status_rank > payments.status_rank THEN EXCLUDED.reason ELSE payments.reason END,
        status_rank = GREATEST(payments.status_rank, EXCLUDED.status_rank),
        updated_at = GREATEST(payments.updated_at, EXCLUDED.updated_at)"""


async def _upsert_payment(
    conn: asyncpg.Connection,
    event: dict[str, Any],
    status: str,
    reason_code: str | None = None,
    reason: str | None = None,
) -> None:
    await conn.execute(
        UPSERT_PAYMENT,
        event["payment_id"],
        event["user_id"],
        event["amount"]["amount"],
        event["amount"]["currency"],
        event["method"],
        event.get("wallet_id"),
        event.get("provider"),
        event.get("description"),
        status,
        STATUS_RANK[status],
        reason_code,
        reason,
        ts(event["envelope"]["occurred_at"]),
        None if event.get("deadline_at") is None else ts(event["deadline_at"]),
    )


async def apply_payment_created(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    # The worker takes a payment to processing as it handles this event; nothing reports it.
    await _upsert_payment(conn, event, "processing")


async def apply_payment_succeeded(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    await _upsert_payment(conn, event, "completed")
    await _apply_deciding_operation(conn, event)


async def apply_payment_failed(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    await _upsert_payment(conn, event, "failed", event["reason_code"], event["reason"])
    await _apply_deciding_operation(conn, event)


async def _apply_deciding_operation(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    """The operation a terminal event carries, written with the payment's row as its own report
    writes it (every operation's event id derives from its id): otherwise, the topics being read
    in no fixed order, a payment could show terminal beside its charge still pending."""
    op = event.get("operation")
    if op is None:
        return
    envelope = {
        "occurred_at": op["occurred_at"],
        "event_id": derive_id("PaymentOperationCompleted", op["operation_id"]),
    }
    await apply_operation_completed(conn, {**op, "envelope": envelope, "payment_id": event["payment_id"]})


class ProjectionNotReady(RuntimeError):
    """An event arrived before the one it follows (topics are read in no fixed order);
    the projector retries from its stored offsets instead of losing it."""


async def apply_payment_refunded(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    if not await conn.fetchval("SELECT true FROM payments WHERE id = $1", event["payment_id"]):
        raise ProjectionNotReady(f"payment {event['payment_id']} refunded before its creation was projected")
    await conn.execute(
        """UPDATE payments SET refunded_amount = $2, status = $3, status_rank = $4, updated_at = $5
           WHERE id = $1 AND refunded_amount < $2""",
        event["payment_id"],
        event["refunded_total"]["amount"],
        event["status"],
        STATUS_RANK[event["status"]],
        ts(event["envelope"]["occurred_at"]),
    )


async def apply_operation_completed(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    # One operation can be reported by several events on two topics (a redelivered step
    # re-emits it under a new event id, an inconsistent one is reported again), and the
    # projector reads topics in no fixed order: keep the earliest report, so the row
    # does not depend on the order (a rebuild from the log gives the same row). A report
    # replaces the provider's pending answer whatever their order, and keeps its reference
    # when it carries none.
    env = event["envelope"]
    await conn.execute(
        """INSERT INTO payment_operations (id, payment_id, kind, status, amount, currency, source, reference,
               failure_code, failure_reason, created_at, event_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (id) DO UPDATE SET payment_id = EXCLUDED.payment_id, kind = EXCLUDED.kind,
               status = EXCLUDED.status, amount = EXCLUDED.amount, currency = EXCLUDED.currency,
               source = EXCLUDED.source, reference = COALESCE(EXCLUDED.reference, payment_operations.reference),
               failure_code = EXCLUDED.failure_code, failure_reason = EXCLUDED.failure_reason,
               created_at = EXCLUDED.created_at, event_id = EXCLUDED.event_id
           WHERE payment_operations.status = 'pending'
               OR (EXCLUDED.created_at, EXCLUDED.event_id)
                  < (payment_operations.created_at, payment_operations.event_id)""",
        event["operation_id"],
        event["payment_id"],
        event["kind"],
        event["status"],
        event["amount"]["amount"],
        event["amount"]["currency"],
        event["source"],
        event["reference"],
        event["failure_code"],
        event["failure_reason"],
        ts(env["occurred_at"]),
        env["event_id"],
    )


async def apply_operation_pending(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    """The provider's pending answer: the operation's row until its outcome, which replaces it.
    Once an outcome is there, only the reference and deadline it lacks are added; among pending
    answers (a request made again) the earliest stays, as for outcomes."""
    env = event["envelope"]
    await conn.execute(
        """INSERT INTO payment_operations (id, payment_id, kind, status, amount, currency, source, reference,
               created_at, event_id, deadline_at)
           VALUES ($1, $2, $3, 'pending', $4, $5, 'provider', $6, $7, $8, $9)
           ON CONFLICT (id) DO UPDATE SET
               reference = COALESCE(payment_operations.reference, EXCLUDED.reference),
               deadline_at = COALESCE(payment_operations.deadline_at, EXCLUDED.deadline_at),
               created_at = CASE WHEN payment_operations.status = 'pending'
                            THEN LEAST(payment_operations.created_at, EXCLUDED.created_at)
                            ELSE payment_operations.created_at END""",
        event["operation_id"],
        event["payment_id"],
        event["kind"],
        event["amount"]["amount"],
        event["amount"]["currency"],
        event["reference"],
        ts(env["occurred_at"]),
        env["event_id"],
        None if event["deadline_at"] is None else ts(event["deadline_at"]),
    )


async def apply_operation_inconsistent(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    # The operation row may not be projected yet (another topic): insert it flagged.
    await apply_operation_completed(conn, {**event, "failure_code": None, "failure_reason": None})
    await conn.execute("UPDATE payment_operations SET inconsistent = true WHERE id = $1", event["operation_id"])


PAYMENT_VIEWS: dict[str, Apply] = {
    "PaymentCreated": apply_payment_created,
    "PaymentSucceeded": apply_payment_succeeded,
    "PaymentFailed": apply_payment_failed,
    "PaymentRefunded": apply_payment_refunded,
    "PaymentOperationCompleted": apply_operation_completed,
    "PaymentOperationInconsistent": apply_operation_inconsistent,
    "PaymentOperationPending": apply_operation_pending,
}


REFUND_STATUS_RANK = {"pending": 0, "failed": 1, "succeeded": 2}

# Any of a refund's events may be projected first (three topics): each one inserts the row
# or moves it forward, so the row ends the same in any order.
UPSERT_REFUND = """
    INSERT INTO payment_refunds (id, payment_id, amount, currency, reason, created_at, status, status_rank,
                                 failure_code, failure_reason, decided_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT (id) DO UPDATE SET
        reason = COALESCE(payment_refunds.reason, EXCLUDED.reason),
        created_at = LEAST(payment_refunds.created_at, EXCLUDED.created_at),
        status = CASE WHEN EXCLUDED.status_rank > payment_refunds.status_rank THEN EXCLUDED.status
                 ELSE payment_refunds.status END,
        failure_code = COALESCE(payment_refunds.failure_code, EXCLUDED.failure_code),
        failure_reason = COALESCE(payment_refunds.failure_reason, EXCLUDED.failure_reason),
        decided_at = CASE WHEN EXCLUDED.status_rank > payment_refunds.status_rank THEN EXCLUDED.decided_at
                     ELSE payment_refunds.decided_at END,
        status_rank = GREATEST(payment_refunds.status_rank, EXCLUDED.status_rank)"""


async def _upsert_refund(
    conn: asyncpg.Connection,
    event: dict[str, Any],
    status: str,
    reason: str | None = None,
    failure: tuple[str, str] | None = None,
) -> None:
    occurred = ts(event["envelope"]["occurred_at"])
    await conn.execute(
        UPSERT_REFUND,
        event["refund_id"],
        event["payment_id"],
        event["amount"]["amount"],
        event["amount"]["currency"],
        reason,
        occurred,
        status,
        REFUND_STATUS_RANK[status],
        None if failure is None else failure[0],
        None if failure is None else failure[1],
        None if status == "pending" else occurred,
    )


async def apply_refund_requested(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    """The API reserves a refund and publishes it in one transaction; when Kafka took the
    event but the commit failed, this writes the reservation the API lost."""
    await _upsert_refund(conn, event, "pending", reason=event["reason"])


async def apply_refund_succeeded(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    await _upsert_refund(conn, event, "succeeded")


async def apply_refund_failed(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    """Releases the reservation: the API counts only pending and succeeded refunds."""
    await _upsert_refund(conn, event, "failed", failure=(event["reason_code"], event["reason"]))


REFUND_RESERVATIONS: dict[str, Apply] = {
    "RefundRequested": apply_refund_requested,
    "PaymentRefunded": apply_refund_succeeded,
    "RefundFailed": apply_refund_failed,
}

# The tables each projection (by name) writes: what `payments rebuild` recreates and compares.
VIEW_TABLES: dict[str, tuple[str, ...]] = {
    "wallet_views": ("wallets", "wallet_movements"),
    "payment_views": ("payments", "payment_operations"),
    "refund_reservations": ("payment_refunds",),
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

    async def reapply(self, conn: asyncpg.Connection, event: dict[str, Any]) -> bool:
        """Apply one event outside the offset bookkeeping: a dead letter replayed after its cause was
        fixed (the appliers are idempotent upserts). False when this projection has no use for it."""
        apply = self.appliers.get(event["envelope"]["event_type"])
        if apply is None:
            return False
        async with conn.transaction():
            await apply(conn, event)
        return True

    async def apply_batch(
        self,
        conn: asyncpg.Connection,
        topic: str,
        partition: int,
        messages: list[tuple[int, dict[str, Any] | None]],
        schema: str | None = None,
    ) -> int:
        """Apply (offset, decoded event or None for undecodable) in one transaction; return rows applied.

        With `schema`, the views and offsets of that schema are written instead of the live ones.
        """
        return await self.apply_batches(conn, {(topic, partition): messages}, schema)

    async def apply_batches(
        self,
        conn: asyncpg.Connection,
        batches: dict[tuple[str, int], list[tuple[int, dict[str, Any] | None]]],
        schema: str | None = None,
    ) -> int:
        """`apply_batch` for several partitions at once, in one transaction, in the order given:
        one read of their offsets, the writes of all of them batched, one write of the offsets."""
        applied = 0
        async with conn.transaction():
            if schema is not None:
                # The appliers name their tables unqualified, so the same SQL can rebuild into a side schema.
                quoted = '"' + schema.replace('"', '""') + '"'
                await conn.execute(f"SET LOCAL search_path TO {quoted}, public")
            topics, partitions = [t for t, _ in batches], [p for _, p in batches]
            stored = {
                (r["topic"], r["partition"]): r["last_offset"]
                for r in await conn.fetch(
                    "SELECT topic, partition, last_offset FROM projection_offsets WHERE projection = $1 "
                    "AND (topic, partition) IN (SELECT * FROM unnest($2::text[], $3::int[])) "
                    "ORDER BY topic, partition FOR UPDATE",
                    self.name,
                    topics,
                    partitions,
                )
            }
            writes = BatchedWrites(conn)
            reached = []
            for key, messages in batches.items():
                last = stored.get(key, -1)
                for offset, event in messages:
                    if offset <= last:
                        continue
                    if event is not None:
                        apply = self.appliers.get(event["envelope"]["event_type"])
                        if apply is not None:
                            await apply(cast(asyncpg.Connection, writes), event)  # the appliers execute and fetchval
                            applied += 1
                    last = offset
                reached.append(last)
            await writes.flush()
            await conn.execute(
                """INSERT INTO projection_offsets (projection, topic, partition, last_offset)
                   SELECT $1, t, p, o FROM unnest($2::text[], $3::int[], $4::bigint[]) AS s(t, p, o)
                   WHERE o >= 0
                   ON CONFLICT (projection, topic, partition)
                   DO UPDATE SET last_offset = EXCLUDED.last_offset, updated_at = now()""",
                self.name,
                topics,
                partitions,
                reached,
            )
        return applied
