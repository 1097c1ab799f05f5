"""The payment saga on real Kafka, PostgreSQL and the provider simulator."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg
import pytest

from connectors.config import Config
from connectors.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from connectors.topics import EXTERNAL_PROVIDER_EVENTS, PAYMENT_OPERATION_COMPLETED
from tests.integration.kafka_helpers import events_for_key, saga_passed
from tests.support import JSON, Api, eventually
from tests.support.postgres import inspect_as_owner

SEED_WALLET = "550e8400-e29b-41d4-a716-446655440001"
SEED_USER = "550e8400-e29b-41d4-a716-446655440010"


@pytest.fixture
async def db(config: Config):
    conn = await inspect_as_owner(config)
    yield conn
    await conn.close()


async def new_wallet(wallet_api: Api, balance: int, currency: str = "USD") -> tuple[str, str]:
    """(wallet id, user id) of a fresh wallet holding `balance`, visible in the views."""
    user_id = str(uuid.uuid4())
    status, body = await wallet_api.post("/api/v1/wallets", {"user_id": user_id, "currency": currency})
    assert status == 201, body
    wallet_id = body["id"]
    if balance:
        status, moved = await wallet_api.post(
            f"/api/v1/wallet/{wallet_id}/movement", {"type": "income", "amount": balance, "currency": currency}
        )
        assert status == 201, moved
    await wallet_balance(wallet_api, wallet_id, balance)
    return wallet_id, user_id


async def wallet_balance(wallet_api: Api, wallet_id: str, expected: int | None = None) -> int:
    async def check() -> int | None:
        status, body = await wallet_api.get(f"/api/v1/wallet/{wallet_id}")
        if status != 200 or (expected is not None and body["balance"] != expected):
            return None
        return int(body["balance"]) if body["balance"] else -1

    found = await eventually(check, what=f"wallet {wallet_id} with balance {expected}")
    return 0 if found == -1 else found


def wallet_payment(user_id: str, wallet_id: str, amount: int, currency: str = "USD") -> dict[str, Any]:
    return {
        "user_id": user_id,
        "amount": amount,
        "currency": currency,
        "payment_method_type": "wallet",
        "wallet_id": wallet_id,
        "description": "test payment",
    }


def external_payment(token: str, amount: int = 1_500) -> dict[str, Any]:
    return {
        "user_id": str(uuid.uuid4()),
        "amount": amount,
        "currency": "USD",
        "payment_method_type": "external",
        "provider": "simulator",
        "token": token,
    }


async def payment_in(api: Api, payment_id: str, *statuses: str, timeout: float = 20.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status, body = await api.get(f"/api/v1/payments/{payment_id}?wait=1")
        return body if status == 200 and body["status"] in statuses else None

    result: dict[str, Any] = await eventually(check, timeout=timeout, what=f"payment {payment_id} in {statuses}")
    return result


async def test_the_seed_payment_example_debits_the_wallet_and_a_refund_restores_it(
    payment_api: Api, wallet_api: Api
) -> None:
    before = await wallet_balance(wallet_api, SEED_WALLET)
    status, body = await payment_api.post("/api/v1/payments", wallet_payment(SEED_USER, SEED_WALLET, 5000))
    assert status == 201, body
    assert body["status"] == "completed" and body["amount"] == 5000 and body["currency"] == "USD"
    assert [(op["kind"], op["status"], op["source"]) for op in body["operations"]] == [
        ("charge", "succeeded", "wallet")
    ]
    await wallet_balance(wallet_api, SEED_WALLET, before - 5000)

    status, refund = await payment_api.post(f"/api/v1/payments/{body['id']}/refund", {"reason": "changed my mind"})
    assert status == 202, refund
    refunded = await payment_in(payment_api, body["id"], "refunded")
    assert refunded["refunded_amount"] == 5000
    await wallet_balance(wallet_api, SEED_WALLET, before)

    status, again = await payment_api.post(f"/api/v1/payments/{body['id']}/refund", {})
    assert status == 409 and again["error"]["code"] == "already_refunded"


async def test_insufficient_funds_fails_the_payment_with_the_reason(payment_api: Api, wallet_api: Api) -> None:
    wallet_id, user_id = await new_wallet(wallet_api, 1_000)
    status, body = await payment_api.post("/api/v1/payments", wallet_payment(user_id, wallet_id, 1_001))
    assert status == 201, body
    failed = await payment_in(payment_api, body["id"], "failed")
    assert failed["reason_code"] == "insufficient_funds" and "1000" in failed["reason"]
    assert failed["operations"][0]["failure_code"] == "insufficient_funds"
    assert await wallet_balance(wallet_api, wallet_id, 1_000) == 1_000
    status, refused = await payment_api.post(f"/api/v1/payments/{body['id']}/refund", {})
    assert status == 409 and refused["error"]["code"] == "not_refundable"


async def test_bad_payments_are_refused_with_a_clear_error(payment_api: Api, wallet_api: Api) -> None:
    wallet_id, user_id = await new_wallet(wallet_api, 0, "EUR")
    cases = [
        (wallet_payment(user_id, str(uuid.uuid4()), 100), 404, "wallet_not_found", "wallet_id"),
        (wallet_payment(user_id, wallet_id, 100, "USD"), 422, "currency_mismatch", "currency"),
        (wallet_payment(user_id, wallet_id, 0, "EUR"), 422, "invalid_amount", "amount"),
        (wallet_payment(user_id, wallet_id, -5, "EUR"), 422, "invalid_amount", "amount"),
        ({**wallet_payment(user_id, wallet_id, 10, "EUR"), "wallet_id": None}, 400, "missing_field", "wallet_id"),
        ({**external_payment("tok_success"), "token": None}, 400, "missing_field", "token"),
    ]
    for body, status, code, field in cases:
        got_status, got = await payment_api.post("/api/v1/payments", body)
        assert (got_status, got["error"]["code"], got["error"]["field"]) == (status, code, field), got


async def test_an_idempotency_key_replays_the_first_response_and_refuses_another_body(
    payment_api: Api, wallet_api: Api, db: asyncpg.Connection
) -> None:
    wallet_id, user_id = await new_wallet(wallet_api, 10_000)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = wallet_payment(user_id, wallet_id, 2_500)
    first = await payment_api.post("/api/v1/payments", body, headers=key)
    second = await payment_api.post("/api/v1/payments", body, headers=key)
    assert first[0] == 201 and first == second
    status, conflict = await payment_api.post("/api/v1/payments", {**body, "amount": 2_600}, headers=key)
    assert status == 409 and conflict["error"]["code"] == "idempotency_conflict"
    await wallet_balance(wallet_api, wallet_id, 7_500)

    async def payment_rows() -> int | None:
        # The answer comes from the saga's terminal event, the view follows it a moment later.
        return await db.fetchval("SELECT count(*) FROM payments WHERE wallet_id = $1", wallet_id) or None

    assert await eventually(payment_rows, what="the payment in the view") == 1


async def test_a_hundred_concurrent_payments_never_overdraw_the_wallet(
    payment_api: Api, wallet_api: Api, db: asyncpg.Connection
) -> None:
    wallet_id, user_id = await new_wallet(wallet_api, 10_000)
    results = await asyncio.gather(
        *(payment_api.post("/api/v1/payments", wallet_payment(user_id, wallet_id, 300)) for _ in range(100))
    )
    assert all(status == 201 for status, _ in results)
    ids = [body["id"] for _, body in results]
    finals = [await payment_in(payment_api, pid, "completed", "failed") for pid in ids]
    completed = [p for p in finals if p["status"] == "completed"]
    assert len(completed) == 33
    assert {p["reason_code"] for p in finals if p["status"] == "failed"} == {"insufficient_funds"}
    await wallet_balance(wallet_api, wallet_id, 100)
    lowest = await db.fetchval("SELECT min(balance_after) FROM wallet_movements WHERE wallet_id = $1", wallet_id)
    assert lowest >= 0


async def test_partial_refunds_stop_at_the_amount_paid(payment_api: Api, wallet_api: Api) -> None:
    wallet_id, user_id = await new_wallet(wallet_api, 5_000)
    _, body = await payment_api.post("/api/v1/payments", wallet_payment(user_id, wallet_id, 3_000))
    assert body["status"] == "completed", body
    status, _ = await payment_api.post(f"/api/v1/payments/{body['id']}/refund", {"amount": 1_000})
    assert status == 202
    status, too_much = await payment_api.post(f"/api/v1/payments/{body['id']}/refund", {"amount": 2_001})
    assert status == 422 and too_much["error"]["code"] == "amount_exceeds_refundable"
    partial = await payment_in(payment_api, body["id"], "partially_refunded")
    assert partial["refunded_amount"] == 1_000
    status, _ = await payment_api.post(f"/api/v1/payments/{body['id']}/refund", {})
    assert status == 202
    await payment_in(payment_api, body["id"], "refunded")
    await wallet_balance(wallet_api, wallet_id, 5_000)


async def test_an_external_payment_succeeds_by_signed_webhook_and_refunds_in_full(payment_api: Api) -> None:
    status, body = await payment_api.post("/api/v1/payments", external_payment("tok_success"))
    assert status == 201, body
    done = await payment_in(payment_api, body["id"], "completed")
    assert [(op["kind"], op["status"], op["source"]) for op in done["operations"]] == [
        ("charge", "succeeded", "provider")
    ]
    status, _ = await payment_api.post(f"/api/v1/payments/{body['id']}/refund", {"reason": "return"})
    assert status == 202
    refunded = await payment_in(payment_api, body["id"], "refunded")
    assert refunded["refunded_amount"] == 1_500
    status, again = await payment_api.post(f"/api/v1/payments/{body['id']}/refund", {})
    assert status == 409 and again["error"]["code"] == "already_refunded"


async def test_a_declined_card_fails_the_payment_with_the_reason(payment_api: Api) -> None:
    _, body = await payment_api.post("/api/v1/payments", external_payment("tok_decline"))
    failed = await payment_in(payment_api, body["id"], "failed")
    assert failed["reason_code"] == "card_declined"


async def test_no_answer_fails_at_the_deadline_and_a_late_success_is_refunded_at_the_provider(
    payment_api: Api, config: Config, http: Any
) -> None:
    _, silent = await payment_api.post("/api/v1/payments", external_payment("tok_no_answer"))
    _, late = await payment_api.post("/api/v1/payments", external_payment("tok_late_success"))
    for payment in (silent, late):
        failed = await payment_in(payment_api, payment["id"], "failed", timeout=config.provider.deadline_s + 10)
        assert failed["reason_code"] == "provider_timeout"

    async def compensated() -> dict[str, Any] | None:
        _, body = await payment_api.get(f"/api/v1/payments/{late['id']}")
        ops = {(op["kind"], op["status"], op["source"], op["inconsistent"]) for op in body["operations"]}
        return body if ("refund", "succeeded", "provider", False) in ops else None

    body = await eventually(compensated, timeout=config.provider.late_delay_s + 10, what="the compensating refund")
    assert body["status"] == "failed"
    assert any(op["inconsistent"] and op["status"] == "succeeded" for op in body["operations"])
    async with http.get(f"{config.provider.base_url}/v1/objects?payment_id={late['id']}") as response:
        objects = (await response.json())["data"]
    charge = next(o for o in objects if o["object"] == "charge")
    assert charge["status"] == "succeeded" and charge["refunded"] == charge["amount"]


@pytest.mark.parametrize("token", ["tok_duplicate_webhooks", "tok_out_of_order"])
async def test_duplicate_and_out_of_order_webhooks_make_one_operation(
    payment_api: Api, config: Config, db: asyncpg.Connection, token: str
) -> None:
    _, body = await payment_api.post("/api/v1/payments", external_payment(token))
    done = await payment_in(payment_api, body["id"], "completed")

    async def delivered_more_than_once() -> list[dict[str, Any]] | None:
        updates = await events_for_key(config, EXTERNAL_PROVIDER_EVENTS.name, body["id"])
        return updates if len(updates) >= 2 else None

    await eventually(delivered_more_than_once, what="the provider delivering more than once")
    await saga_passed(config, db)
    ops = await db.fetch("SELECT * FROM payment_operations WHERE payment_id = $1", body["id"])
    assert len(ops) == 1 and ops[0]["status"] == "succeeded" and len(done["operations"]) == 1
    completed = await events_for_key(config, PAYMENT_OPERATION_COMPLETED.name, body["id"])
    assert len({e["operation_id"] for e in completed}) == 1


async def test_a_webhook_with_a_bad_signature_or_an_old_timestamp_is_refused_and_not_published(
    payment_api: Api, config: Config
) -> None:
    payment_id = str(uuid.uuid4())
    hook = {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "charge.succeeded",
        "created": int(time.time() * 1000),
        "data": {
            "id": "ch_forged",
            "object": "charge",
            "amount": 100,
            "currency": "USD",
            "status": "succeeded",
            "metadata": {"payment_id": payment_id, "operation_id": str(uuid.uuid4())},
        },
    }
    raw = json.dumps(hook).encode()
    now = int(time.time())
    attempts = [
        {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign("not-the-secret", now, raw)},
        {TIMESTAMP_HEADER: str(now - 600), SIGNATURE_HEADER: sign(config.provider.webhook_secret, now - 600, raw)},
        {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign(config.provider.webhook_secret, now, raw + b" ")},
        {},
    ]
    for headers in attempts:
        status, body = await payment_api.post("/api/v1/webhooks/simulator", data=raw, headers={**headers, **JSON})
        assert status == 401 and body["error"]["code"] == "invalid_signature", body
    assert await events_for_key(config, EXTERNAL_PROVIDER_EVENTS.name, payment_id) == []
    good = {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign(config.provider.webhook_secret, now, raw), **JSON}
    status, _ = await payment_api.post("/api/v1/webhooks/simulator", data=raw, headers=good)
    assert status == 200
