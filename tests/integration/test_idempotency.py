"""Idempotency keys as Stripe has them, on the real services: per caller, bound to their
first request even while it runs, replays that show the current state, expiry."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import aiohttp
import asyncpg
import pytest

from connectors.auth import issue_token
from connectors.config import Config
from devtools.devctl import Process, Supervisor
from tests.integration.test_payment_service import new_wallet, payment_in, wallet_balance, wallet_payment
from tests.support import Api, eventually
from tests.support.postgres import inspect_as_owner


@pytest.fixture
async def db(config: Config):
    conn = await inspect_as_owner(config)
    yield conn
    await conn.close()


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"key-{uuid.uuid4()}"}


def as_admin(api: Api, config: Config, subject: str) -> Api:
    return api.as_(issue_token(config.auth, subject, ["admin"]))


async def test_a_key_belongs_to_its_caller(payment_api: Api, wallet_api: Api, config: Config) -> None:
    wallet_id, user_id = await new_wallet(wallet_api, 10_000)
    alice, bob = as_admin(payment_api, config, "tenant-alice"), as_admin(payment_api, config, "tenant-bob")
    shared = key()
    status_a, first = await alice.post("/api/v1/payments", wallet_payment(user_id, wallet_id, 2_500), headers=shared)
    # Bob's same key with another body is his own key: no 409, nothing learnt about Alice's.
    status_b, other = await bob.post("/api/v1/payments", wallet_payment(user_id, wallet_id, 2_600), headers=shared)
    assert (status_a, status_b) == (201, 201), (first, other)
    assert first["id"] != other["id"] and (first["amount"], other["amount"]) == (2_500, 2_600)
    status, replay = await alice.post("/api/v1/payments", wallet_payment(user_id, wallet_id, 2_500), headers=shared)
    assert status == 201 and replay["id"] == first["id"]
    status, conflict = await alice.post("/api/v1/payments", wallet_payment(user_id, wallet_id, 2_600), headers=shared)
    assert status == 409 and conflict["error"]["code"] == "idempotency_conflict"
    await wallet_balance(wallet_api, wallet_id, 10_000 - 2_500 - 2_600)


async def test_a_burst_with_one_key_then_another_body_gets_409_and_moves_once(
    wallet_api: Api, db: asyncpg.Connection
) -> None:
    wallet_id, _ = await new_wallet(wallet_api, 10_000)
    path, headers = f"/api/v1/wallet/{wallet_id}/movement", key()
    body = {"type": "expense", "amount": 1_000, "currency": "USD"}
    burst = [asyncio.create_task(wallet_api.post(path, body, headers=headers)) for _ in range(20)]
    # The different body follows as soon as the burst holds the key, while it still runs.
    await eventually(
        lambda: db.fetchval("SELECT 1 FROM idempotency_keys WHERE key = $1", headers["Idempotency-Key"]),
        interval=0.002,
        what="the burst's claim",
    )
    status, conflict = await wallet_api.post(path, {**body, "amount": 999}, headers=headers)
    answers = await asyncio.gather(*burst)
    assert status == 409 and conflict["error"]["code"] == "idempotency_conflict", conflict
    assert {s for s, _ in answers} == {201}, answers
    assert len({b["id"] for _, b in answers}) == 1 and answers[0][1]["amount"] == 1_000
    await wallet_balance(wallet_api, wallet_id, 9_000)
    status, listed = await wallet_api.get(f"/api/v1/wallet/{wallet_id}/movements")
    assert [m["amount"] for m in listed["data"] if m["type"] == "expense"] == [1_000]


async def test_a_refund_key_is_bound_to_its_amount_and_replays_the_current_status(
    payment_api: Api, wallet_api: Api
) -> None:
    wallet_id, user_id = await new_wallet(wallet_api, 10_000)
    _, payment = await payment_api.post("/api/v1/payments", wallet_payment(user_id, wallet_id, 4_000))
    assert payment["status"] == "completed", payment
    path, headers = f"/api/v1/payments/{payment['id']}/refund", key()
    status, refund = await payment_api.post(path, {"amount": 1_000}, headers=headers)
    assert status == 202 and refund["status"] == "pending", refund
    status, conflict = await payment_api.post(path, {"amount": 2_000}, headers=headers)
    assert status == 409 and conflict["error"]["code"] == "idempotency_conflict", conflict
    await payment_in(payment_api, payment["id"], "partially_refunded")

    async def replayed_succeeded() -> dict | None:
        status, again = await payment_api.post(path, {"amount": 1_000}, headers=headers)
        assert status == 202 and again["refund_id"] == refund["refund_id"], again
        return again if again["status"] == "succeeded" else None

    await eventually(replayed_succeeded, what="the replayed refund to say succeeded")
    assert (await payment_in(payment_api, payment["id"], "partially_refunded"))["refunded_amount"] == 1_000
    await wallet_balance(wallet_api, wallet_id, 7_000)


WINDOW_S = 1.5


@pytest.fixture
def short_key_wallet_api(wallet_system: Config, supervisor: Supervisor, http: aiohttp.ClientSession) -> Iterator[Api]:
    """A second wallet API whose keys expire after WINDOW_S, beside the ordinary one."""
    port = wallet_system.wallet_api.port + 1000
    process = Process("wallet-api-short-keys", "services.wallet_api", (), port, "wallet API, keys expire fast")
    supervisor.start(process, {"WALLET_API_PORT": str(port), "WALLET_API_IDEMPOTENCY_WINDOW_S": str(WINDOW_S)})
    try:
        supervisor.wait_healthy(process)
        yield Api(http, f"http://127.0.0.1:{port}", issue_token(wallet_system.auth, "test-admin", ["admin"]))
    finally:
        supervisor.stop(process.name)


async def test_an_expired_key_starts_a_new_request(short_key_wallet_api: Api, wallet_api: Api, db) -> None:
    wallet_id, _ = await new_wallet(wallet_api, 10_000)
    path, headers = f"/api/v1/wallet/{wallet_id}/movement", key()
    body = {"type": "expense", "amount": 1_000, "currency": "USD"}
    started = time.monotonic()
    status, first = await short_key_wallet_api.post(path, body, headers=headers)
    status2, replay = await short_key_wallet_api.post(path, body, headers=headers)
    assert time.monotonic() - started < WINDOW_S, "too slow to see the replay inside the window"
    assert (status, status2) == (201, 201) and replay["id"] == first["id"]
    await asyncio.sleep(WINDOW_S - (time.monotonic() - started) + 0.2)
    status, fresh = await short_key_wallet_api.post(path, body, headers=headers)
    assert status == 201 and fresh["id"] != first["id"], fresh
    status, changed = await short_key_wallet_api.post(path, {**body, "amount": 500}, headers=headers)
    assert status == 409, changed  # the new generation is bound to its own body again
    await wallet_balance(wallet_api, wallet_id, 8_000)
    generation = await db.fetchval(
        "SELECT generation FROM idempotency_keys WHERE caller = 'test-admin' AND key = $1", headers["Idempotency-Key"]
    )
    assert generation == 2
