"""A payment worker killed with SIGKILL in the middle of a stream of payments."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import pytest

from connectors.config import Config
from devtools.devctl import Supervisor
from tests.conftest import ensure_running
from tests.integration.test_payment_service import new_wallet, payment_in, wallet_balance, wallet_payment
from tests.support import Api, eventually
from tests.support.postgres import inspect_as_owner


@pytest.fixture
async def db(config: Config):
    conn = await inspect_as_owner(config)
    yield conn
    await conn.close()


async def test_a_payment_worker_killed_mid_stream_leaves_every_payment_terminal_and_every_balance_right(
    payment_api: Api, wallet_api: Api, config: Config, supervisor: Supervisor, db: asyncpg.Connection
) -> None:
    wallets = [await new_wallet(wallet_api, 12_000) for _ in range(3)]
    bodies = [wallet_payment(user, wallet, 100 + (i % 7) * 50) for i in range(240) for wallet, user in [wallets[i % 3]]]

    answered: list[str] = []

    async def pay(body: dict) -> str | None:
        status, created = await payment_api.post("/api/v1/payments", body)
        if status == 503:  # shed while the worker is down: refused whole, so it must change nothing
            assert created["error"]["code"] == "overloaded", created
            return None
        assert status == 201, created
        answered.append(created["status"])
        return str(created["id"])

    paying = asyncio.gather(*(pay(b) for b in bodies))
    # Killed by progress, mid-stream: some payments finished, most still in flight.
    await eventually(
        lambda: _true(sum(s in ("completed", "failed") for s in answered) >= 20), what="20 payments decided"
    )
    supervisor.stop("payment-worker", signal.SIGKILL)
    assert len(answered) < len(bodies), "the kill landed after every payment was answered"
    ids = [pid for pid in await paying if pid is not None]
    ensure_running(config, supervisor, "payment-worker")

    finals = [await payment_in(payment_api, pid, "completed", "failed", timeout=90) for pid in ids]
    assert {p["reason_code"] for p in finals if p["status"] == "failed"} <= {"insufficient_funds"}
    for wallet_id, _ in wallets:
        paid = sum(p["amount"] for p in finals if p["status"] == "completed" and p["wallet_id"] == wallet_id)
        await wallet_balance(wallet_api, wallet_id, 12_000 - paid)
        movements = await db.fetchval(
            "SELECT sum(CASE WHEN type = 'income' THEN amount ELSE -amount END) FROM wallet_movements "
            "WHERE wallet_id = $1 AND status = 'applied'",
            wallet_id,
        )
        assert movements == 12_000 - paid
    # one debit per payment at most, whatever was redelivered
    debits = await db.fetchval(
        "SELECT count(*) FROM wallet_movements WHERE payment_id = ANY($1::uuid[]) AND status = 'applied'", ids
    )
    assert debits == sum(1 for p in finals if p["status"] == "completed")


async def _true(value: bool) -> bool:
    return value
