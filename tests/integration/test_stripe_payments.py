"""A payment with provider "stripe" through the whole saga, on the real broker and database:
the payment worker charges through the Stripe adapter, Stripe's mock server (stripe-mock)
answers, and a webhook signed with the environment's test secret, as Stripe signs them,
completes it; a refund goes the same way. stripe-mock sends no webhooks, so the test sends
them, built on the PaymentIntent and Refund objects stripe-mock returns."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import stripe

from connectors.config import Config
from connectors.stripe_secrets import StripeSecrets, load_stripe_secrets
from connectors.topics import EXTERNAL_PROVIDER_EVENTS, PAYMENT_CREATED, PAYMENT_OPERATION_COMPLETED
from devtools.devctl import log_dir
from domain.payment import charge_operation_id, refund_operation_id
from tests.integration.kafka_helpers import events_for_key, raw_messages, saga_passed, tailing
from tests.integration.test_observability import scrape, total
from tests.integration.test_payment_service import external_payment, payment_in
from tests.support import JSON, Api, eventually
from tests.support.postgres import inspect_as_owner

HOOK = "/api/v1/webhooks/stripe"


@pytest.fixture(scope="module")
def secrets(payment_system: Config) -> StripeSecrets:
    assert payment_system.stripe.enabled, "the test environment offers stripe (config/test.json)"
    return load_stripe_secrets(payment_system)


@pytest.fixture
async def mock(payment_system: Config, secrets: StripeSecrets) -> AsyncIterator[stripe.StripeClient]:
    """The test's own SDK client on stripe-mock: the objects it returns are Stripe's real shapes."""
    http = stripe.AIOHTTPClient(timeout=5)
    yield stripe.StripeClient(
        secrets.secret_key, base_addresses={"api": payment_system.stripe.api_base}, http_client=http
    )
    await http.close_async()


@pytest.fixture
async def db(config: Config) -> AsyncIterator[asyncpg.Connection]:
    conn = await inspect_as_owner(config)
    yield conn
    await conn.close()


def stripe_payment(amount: int = 2_500, token: str = "pm_card_visa") -> dict[str, Any]:
    return {**external_payment(token, amount), "provider": "stripe"}


def event(kind: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
    body = {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": "2025-09-30.clover",
        "type": kind,
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "data": {"object": obj},
    }
    return json.dumps(body).encode()


def signed(raw: bytes, secret: str, at: int | None = None) -> dict[str, str]:
    return {"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(raw.decode(), secret, at), **JSON}


async def stripe_calls(http: aiohttp.ClientSession, config: Config, operation: str) -> float:
    samples = await scrape(http, config.payment_worker.web_port)
    return total(samples, "provider_calls_total", provider="stripe", operation=operation, outcome="accepted")


async def created_payment(payment_api: Api, body: dict[str, Any], config: Config) -> tuple[str, asyncio.Task[Any]]:
    """The payment's id as soon as it is on the log, and the create request, still waiting on its outcome
    (it answers when the payment is terminal, which here takes our webhook)."""
    async with tailing(config, PAYMENT_CREATED.name) as created:
        request = asyncio.create_task(payment_api.post("/api/v1/payments", body))

        async def ours() -> str | None:
            return next((e["payment_id"] for e in created if e["user_id"] == body["user_id"]), None)

        return await eventually(ours, what="the PaymentCreated on the log"), request


async def test_a_stripe_payment_is_charged_at_stripe_completed_by_its_webhook_and_refunded(
    payment_api: Api,
    payment_system: Config,
    secrets: StripeSecrets,
    mock: stripe.StripeClient,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
) -> None:
    config = payment_system
    charges_before = await stripe_calls(http, config, "charge")
    payment_id, request = await created_payment(payment_api, stripe_payment(2_500), config)

    async def charged_at_stripe() -> bool:
        return await stripe_calls(http, config, "charge") > charges_before

    await eventually(charged_at_stripe, what="the worker's PaymentIntent accepted by stripe-mock")
    intent = (await mock.v1.payment_intents.create_async({"amount": 2_500, "currency": "usd"})).to_dict()
    intent.update(
        status="succeeded",
        amount_received=2_500,
        metadata={"payment_id": payment_id, "operation_id": charge_operation_id(payment_id, "external")},
    )
    succeeded = event("payment_intent.succeeded", intent)
    status, answer = await payment_api.post(HOOK, data=succeeded, headers=signed(succeeded, secrets.webhook_secret))
    assert (status, answer) == (200, {"received": True})

    status, body = await request
    assert status == 201 and body["status"] == "completed", body
    assert [(op["kind"], op["status"], op["source"], op["reference"]) for op in body["operations"]] == [
        ("charge", "succeeded", "provider", intent["id"])
    ]

    # Stripe redelivers, and events arrive out of order: the same event again and an older one.
    processing = event("payment_intent.processing", {**intent, "status": "processing", "amount_received": 0})
    for raw in (succeeded, processing):
        status, _ = await payment_api.post(HOOK, data=raw, headers=signed(raw, secrets.webhook_secret))
        assert status == 200
    await saga_passed(config, db)
    completed = await events_for_key(config, PAYMENT_OPERATION_COMPLETED.name, payment_id)
    assert len({e["operation_id"] for e in completed}) == 1

    refunds_before = await stripe_calls(http, config, "refund")
    status, refund = await payment_api.post(f"/api/v1/payments/{payment_id}/refund", {"amount": 1_000})
    assert status == 202, refund

    async def refunded_at_stripe() -> bool:
        return await stripe_calls(http, config, "refund") > refunds_before

    await eventually(refunded_at_stripe, what="the worker's refund accepted by stripe-mock")
    made = (await mock.v1.refunds.create_async({"payment_intent": intent["id"], "amount": 1_000})).to_dict()
    made["metadata"] = {"payment_id": payment_id, "operation_id": refund_operation_id(refund["refund_id"])}
    for raw in (event("refund.created", {**made, "status": "pending"}), event("refund.updated", made)):
        status, _ = await payment_api.post(HOOK, data=raw, headers=signed(raw, secrets.webhook_secret))
        assert status == 200
    done = await payment_in(payment_api, payment_id, "partially_refunded")
    assert done["refunded_amount"] == 1_000
    assert [(r["amount"], r["status"]) for r in done["refunds"]] == [(1_000, "succeeded")]

    updates = await events_for_key(config, EXTERNAL_PROVIDER_EVENTS.name, payment_id)
    assert {u["provider"] for u in updates} == {"stripe"} and len(updates) == 5
    for text in [json.dumps(updates), *(p.read_text() for p in log_dir(config).glob("payment-*.log"))]:
        assert secrets.secret_key not in text and secrets.webhook_secret not in text


async def test_a_card_stripe_declines_fails_the_payment_with_stripes_code(
    payment_api: Api, payment_system: Config, secrets: StripeSecrets, mock: stripe.StripeClient
) -> None:
    payment_id, request = await created_payment(
        payment_api, stripe_payment(token="pm_card_chargeDeclined"), payment_system
    )
    intent = (await mock.v1.payment_intents.create_async({"amount": 2_500, "currency": "usd"})).to_dict()
    intent.update(
        last_payment_error={"type": "card_error", "code": "card_declined", "decline_code": "generic_decline"},
        metadata={"payment_id": payment_id, "operation_id": charge_operation_id(payment_id, "external")},
    )
    raw = event("payment_intent.payment_failed", intent)
    status, _ = await payment_api.post(HOOK, data=raw, headers=signed(raw, secrets.webhook_secret))
    assert status == 200
    status, body = await request
    assert (body["status"], body["reason_code"]) == ("failed", "card_declined"), body


async def test_a_bad_or_stale_stripe_signature_is_401_and_publishes_nothing(
    payment_api: Api, payment_system: Config, secrets: StripeSecrets
) -> None:
    payment_id = str(uuid.uuid4())
    intent = {
        "id": "pi_forged",
        "object": "payment_intent",
        "amount": 100,
        "amount_received": 100,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {"payment_id": payment_id, "operation_id": str(uuid.uuid4())},
    }
    raw = event("payment_intent.succeeded", intent)
    now = int(time.time())
    attempts = [
        signed(raw, "whsec_not_the_secret"),
        signed(raw, secrets.webhook_secret, now - payment_system.stripe.webhook_tolerance_s - 1),
        {**signed(raw, secrets.webhook_secret), "Stripe-Signature": "t=1,v1=00"},
        JSON,
    ]
    for headers in attempts:
        status, body = await payment_api.post(HOOK, data=raw, headers=headers)
        assert (status, body["error"]["code"], body["error"]["field"]) == (401, "invalid_signature", "Stripe-Signature")
    altered = raw.replace(b'"amount": 100', b'"amount": 900')
    status, _ = await payment_api.post(HOOK, data=altered, headers=signed(raw, secrets.webhook_secret))
    assert status == 401
    assert await events_for_key(payment_system, EXTERNAL_PROVIDER_EVENTS.name, payment_id) == []
    # The same body, signed now with the secret, is taken: what was refused was the signature.
    status, _ = await payment_api.post(HOOK, data=raw, headers=signed(raw, secrets.webhook_secret))
    assert status == 200
    assert len(await events_for_key(payment_system, EXTERNAL_PROVIDER_EVENTS.name, payment_id)) == 1


async def test_a_stripe_event_that_is_not_about_our_payments_is_acknowledged_and_not_published(
    payment_api: Api, payment_system: Config, secrets: StripeSecrets
) -> None:
    marker = f"evt_{uuid.uuid4().hex}"
    intent = {"id": "pi_other", "object": "payment_intent", "amount": 100, "currency": "usd", "metadata": {}}
    for kind in ("payment_intent.succeeded", "customer.created"):
        raw = event(kind, intent, marker)
        status, body = await payment_api.post(HOOK, data=raw, headers=signed(raw, secrets.webhook_secret))
        assert status == 200 and body["received"] is True and body["ignored"], body
    published = await raw_messages(payment_system, EXTERNAL_PROVIDER_EVENTS.name)
    assert not [value for _, value in published if marker.encode() in value]


async def test_a_payment_names_a_provider_this_deployment_offers(payment_api: Api) -> None:
    status, body = await payment_api.post("/api/v1/payments", {**stripe_payment(), "provider": "paypal"})
    assert (status, body["error"]["code"], body["error"]["field"]) == (422, "unknown_provider", "provider")
    assert "'stripe'" in body["error"]["message"] and "'simulator'" in body["error"]["message"]
