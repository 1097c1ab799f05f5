"""Reverts and refunds agree: a movement that a payment made belongs to its saga.

Real Kafka, PostgreSQL and every worker; the wallet decides, so the rule holds whatever
publishes the revert."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from connectors.config import Config
from domain.payment import charge_operation_id
from domain.wallet import PAYMENT_MOVEMENT
from tests.integration.test_payment_service import new_wallet, payment_in, wallet_balance, wallet_payment
from tests.support import Api, eventually
from tests.support.postgres import inspect_as_owner

REVERT = {"reason": "operator correction", "requested_by": "ops"}


@pytest.fixture
async def db(config: Config):
    conn = await inspect_as_owner(config)
    yield conn
    await conn.close()


async def paid(payment_api: Api, wallet_api: Api, opening: int, amount: int) -> tuple[str, str]:
    """(wallet id, payment id) of a completed wallet payment."""
    wallet_id, user_id = await new_wallet(wallet_api, opening)
    status, body = await payment_api.post("/api/v1/payments", wallet_payment(user_id, wallet_id, amount))
    assert status == 201 and body["status"] == "completed", body
    await wallet_balance(wallet_api, wallet_id, opening - amount)
    return wallet_id, str(body["id"])


async def ledger_agrees(db: asyncpg.Connection, wallet_id: str, payment_id: str, balance: int) -> None:
    """The balance view, the sum of applied movements and the payment's figures all agree:
    the movements a payment caused (and any revert of them) net to -(amount - refunded)."""

    async def check() -> dict[str, Any] | None:
        row = await db.fetchrow(
            """SELECT w.balance,
                      (SELECT COALESCE(sum(CASE type WHEN 'income' THEN amount ELSE -amount END), 0)
                       FROM wallet_movements WHERE wallet_id = w.id AND status = 'applied') AS ledger,
                      (SELECT COALESCE(sum(CASE m.type WHEN 'income' THEN m.amount ELSE -m.amount END), 0)
                       FROM wallet_movements m LEFT JOIN wallet_movements o ON o.id = m.reverts_movement_id
                       WHERE m.status = 'applied' AND $2::uuid IN (m.payment_id, o.payment_id)) AS payment_net,
                      p.amount, p.refunded_amount
               FROM wallets w, payments p WHERE w.id = $1 AND p.id = $2""",
            wallet_id,
            payment_id,
        )
        if row is None or row["balance"] != balance:
            return None
        return dict(row)

    row = await eventually(check, what=f"wallet {wallet_id} projected at {balance}")
    assert row["ledger"] == balance, row
    assert row["payment_net"] == -(row["amount"] - row["refunded_amount"]), row


async def test_a_manual_revert_of_a_payments_debit_is_refused_and_moves_nothing(
    payment_api: Api, wallet_api: Api, db: asyncpg.Connection
) -> None:
    wallet_id, payment_id = await paid(payment_api, wallet_api, 10_000, 5_000)
    debit = charge_operation_id(payment_id, "wallet")
    status, refused = await wallet_api.post(f"/api/v1/movement/{debit}/revert", REVERT)
    assert status == 409 and refused["error"]["code"] == PAYMENT_MOVEMENT, refused
    assert f"/api/v1/payments/{payment_id}/refund" in refused["error"]["message"]
    await ledger_agrees(db, wallet_id, payment_id, 5_000)
    assert (await payment_in(payment_api, payment_id, "completed"))["refunded_amount"] == 0
    applied = await db.fetchval(
        "SELECT count(*) FROM wallet_movements WHERE reverts_movement_id = $1 AND status = 'applied'", debit
    )
    assert applied == 0


async def test_revert_then_refund_pays_back_once(payment_api: Api, wallet_api: Api, db: asyncpg.Connection) -> None:
    wallet_id, payment_id = await paid(payment_api, wallet_api, 10_000, 5_000)
    status, _ = await wallet_api.post(f"/api/v1/movement/{charge_operation_id(payment_id, 'wallet')}/revert", REVERT)
    assert status == 409
    status, refund = await payment_api.post(f"/api/v1/payments/{payment_id}/refund", {})
    assert status == 202, refund
    assert (await payment_in(payment_api, payment_id, "refunded"))["refunded_amount"] == 5_000
    await ledger_agrees(db, wallet_id, payment_id, 10_000)


async def test_refund_then_revert_pays_back_once(payment_api: Api, wallet_api: Api, db: asyncpg.Connection) -> None:
    wallet_id, payment_id = await paid(payment_api, wallet_api, 10_000, 5_000)
    status, _ = await payment_api.post(f"/api/v1/payments/{payment_id}/refund", {})
    assert status == 202
    await payment_in(payment_api, payment_id, "refunded")
    await ledger_agrees(db, wallet_id, payment_id, 10_000)
    status, refused = await wallet_api.post(
        f"/api/v1/movement/{charge_operation_id(payment_id, 'wallet')}/revert", REVERT
    )
    assert status == 409 and refused["error"]["code"] == PAYMENT_MOVEMENT, refused
    await ledger_agrees(db, wallet_id, payment_id, 10_000)
    assert (await payment_in(payment_api, payment_id, "refunded"))["refunded_amount"] == 5_000


async def test_a_manual_revert_of_a_partial_refunds_credit_is_refused(
    payment_api: Api, wallet_api: Api, db: asyncpg.Connection
) -> None:
    wallet_id, payment_id = await paid(payment_api, wallet_api, 10_000, 5_000)
    status, _ = await payment_api.post(f"/api/v1/payments/{payment_id}/refund", {"amount": 2_000})
    assert status == 202
    await payment_in(payment_api, payment_id, "partially_refunded")
    credit = await eventually(
        lambda: db.fetchval(
            "SELECT id::text FROM wallet_movements WHERE payment_id = $1 AND type = 'income'", payment_id
        ),
        what="the refund's credit in the views",
    )
    status, refused = await wallet_api.post(f"/api/v1/movement/{credit}/revert", REVERT)
    assert status == 409 and refused["error"]["code"] == PAYMENT_MOVEMENT, refused
    await ledger_agrees(db, wallet_id, payment_id, 7_000)
