"""One provider contract, two adapters: every test here runs against the simulator's client
(its HTTP API, served in this process) and against the Stripe adapter talking to Stripe's
own mock server (stripe-mock, which `make test` builds and starts), the way a port's
conformance suite runs on each adapter.

The request side: a charge and a refund are accepted with our operation id as the
provider's Idempotency-Key; a retry sends the same key; a refusal is ProviderRejected and
never carries a key; an unreachable provider is ProviderUnavailable after the configured
attempts and then opens the circuit. The webhook side: the provider's signed event about
the object becomes a ProviderReport in our words; a forged or stale one is 401.

What stripe-mock cannot show (it is stateless and sends no webhooks): that a retried key
returns the same PaymentIntent (the simulator shows it; stripe-mock only echoes the key),
and the events themselves, which the tests build in Stripe's event shape and sign with the
environment's test secret, as Stripe would.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import stripe
from aiohttp import web

from connectors.config import Config
from connectors.provider_client import (
    PaymentProvider,
    ProviderAnswer,
    ProviderClient,
    ProviderRejected,
    ProviderUnavailable,
)
from connectors.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from connectors.stripe_provider import StripeProvider
from connectors.stripe_secrets import StripeSecrets, load_stripe_secrets
from services.http import ApiError
from services.payment_api import read_simulator_webhook
from services.provider_webhooks import ProviderReport, read_stripe_webhook
from simulator import provider as provider_simulator
from tests.support import eventually, free_port

Event = Callable[[str, str, ProviderAnswer, str, str, str | None], bytes]


@dataclass
class Subject:
    """One adapter and what the contract needs to drive it."""

    name: str
    connect: Callable[[Config], PaymentProvider]  # a fresh adapter (its own circuit breaker)
    token: str  # a payment method the provider charges
    refuser: Callable[[Config], PaymentProvider]  # an adapter whose requests the provider refuses
    secret_in_refusal: str  # what the refusal must not carry
    settled: Callable[[ProviderAnswer], Awaitable[None]]  # until the provider lets the charge be refunded
    stateful: bool  # a retried key gives back the very same object
    event: Event  # (kind, status, object, payment id, operation id, failure) -> the provider's event body
    sign: Callable[[bytes, int], dict[str, str]]  # headers of an authentic event sent at that second
    forge: Callable[[bytes, int], dict[str, str]]  # headers signed with another secret
    read: Callable[[Mapping[str, str], bytes], list[ProviderReport]]  # the API's webhook reader


# ---------------------------------------------------------------- the simulator, served here


@pytest.fixture(scope="module")
async def simulator(config: Config) -> AsyncIterator[Config]:
    """The simulator's app on a port of its own; its webhooks go to a port nobody serves, so
    nothing of this suite reaches the log."""
    served = dataclasses.replace(
        config,
        provider=dataclasses.replace(config.provider, port=free_port()),
        payment_api=dataclasses.replace(config.payment_api, port=free_port()),
    )
    runner = web.AppRunner(provider_simulator.create_app(served))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", served.provider.port).start()
    yield served
    await runner.cleanup()


def simulator_subject(served: Config) -> Subject:
    provider = served.provider

    async def settled(answer: ProviderAnswer) -> None:
        async def succeeded() -> bool:
            url = f"{provider.base_url}/v1/objects?payment_id={answer_payment[answer.reference]}"
            async with aiohttp.ClientSession() as http, http.get(url) as response:
                objects = (await response.json())["data"]
            return any(o["id"] == answer.reference and o["status"] == "succeeded" for o in objects)

        await eventually(succeeded, what=f"the simulator settling {answer.reference}")

    def event(kind: str, status: str, obj: ProviderAnswer, payment: str, op: str, failure: str | None) -> bytes:
        data = {
            "id": obj.reference,
            "object": kind,
            "amount": obj.amount,
            "currency": obj.currency,
            "status": status,
            "failure_reason": failure,
            "metadata": {"payment_id": payment, "operation_id": op},
        }
        body = {"id": f"evt_{uuid.uuid4().hex}", "type": f"{kind}.{status}", "created": int(time.time() * 1000)}
        return json.dumps({**body, "data": data}).encode()

    def signer(secret: str) -> Callable[[bytes, int], dict[str, str]]:
        return lambda raw, at: {TIMESTAMP_HEADER: str(at), SIGNATURE_HEADER: sign(secret, at, raw)}

    return Subject(
        name="simulator",
        connect=lambda c: ProviderClient(c.provider),
        token="tok_refund_no_answer",  # charged and settled; its first refund stays pending
        refuser=lambda c: ProviderClient(c.provider),
        secret_in_refusal=provider.webhook_secret,
        settled=settled,
        stateful=True,
        event=event,
        sign=signer(provider.webhook_secret),
        forge=signer("not-the-secret"),
        read=lambda headers, raw: read_simulator_webhook(provider, headers, raw, int(time.time())),
    )


# The simulator lists objects by payment id; the contract's charges remember theirs here.
answer_payment: dict[str, str] = {}


# ---------------------------------------------------------------- Stripe, on stripe-mock


def stripe_subject(config: Config) -> Subject:
    secrets = load_stripe_secrets(config)
    live_key = f"sk_live_{uuid.uuid4().hex}"  # stripe-mock refuses a live key and echoes it back

    async def settled(_: ProviderAnswer) -> None:
        return None  # stripe-mock refunds anything at once; a confirmed card PaymentIntent has settled

    def event(kind: str, status: str, obj: ProviderAnswer, payment: str, op: str, failure: str | None) -> bytes:
        metadata = {"payment_id": payment, "operation_id": op}
        data: dict[str, Any]
        if kind == "charge":
            stripe_status = {"succeeded": "succeeded", "failed": "requires_payment_method"}[status]
            data = {
                "id": obj.reference,
                "object": "payment_intent",
                "amount": obj.amount,
                "amount_received": obj.amount if status == "succeeded" else 0,
                "currency": obj.currency.lower(),
                "status": stripe_status,
                "last_payment_error": {"code": failure, "type": "card_error"} if failure else None,
                "metadata": metadata,
            }
            kind_name = "payment_intent.succeeded" if status == "succeeded" else "payment_intent.payment_failed"
        else:
            data = {
                "id": obj.reference,
                "object": "refund",
                "amount": obj.amount,
                "currency": obj.currency.lower(),
                "status": status,
                "failure_reason": failure,
                "metadata": metadata,
            }
            kind_name = "refund.updated"
        body = {"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": kind_name, "created": int(time.time())}
        return json.dumps({**body, "data": {"object": data}}).encode()

    def signer(secret: str) -> Callable[[bytes, int], dict[str, str]]:
        def headers(raw: bytes, at: int) -> dict[str, str]:
            return {"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(raw.decode(), secret, at)}

        return headers

    return Subject(
        name="stripe",
        connect=lambda c: StripeProvider(c.provider, c.stripe, secrets),
        token="pm_card_visa",
        refuser=lambda c: StripeProvider(c.provider, c.stripe, StripeSecrets(live_key, secrets.webhook_secret)),
        secret_in_refusal=live_key,
        settled=settled,
        stateful=False,  # stripe-mock is stateless: a retried key gets a fresh canned object
        event=event,
        sign=signer(secrets.webhook_secret),
        forge=signer("whsec_not_the_secret"),
        read=lambda headers, raw: read_stripe_webhook(
            secrets.webhook_secret, config.stripe.webhook_tolerance_s, headers, raw
        )[0],
    )


@pytest.fixture(params=["simulator", "stripe"])
def subject(request: pytest.FixtureRequest, config: Config, simulator: Config) -> Subject:
    if request.param == "simulator":
        return simulator_subject(simulator)
    return stripe_subject(config)


@pytest.fixture
def served(subject: Subject, config: Config, simulator: Config) -> Config:
    """The configuration the subject's adapter is built from."""
    return simulator if subject.name == "simulator" else config


@pytest.fixture
async def adapter(subject: Subject, served: Config) -> AsyncIterator[PaymentProvider]:
    made = subject.connect(served)
    yield made
    await made.stop()


async def charge(subject: Subject, adapter: PaymentProvider, amount: int = 2_500) -> tuple[ProviderAnswer, str, str]:
    payment, key = str(uuid.uuid4()), str(uuid.uuid4())
    answer = await adapter.charge(key, payment, amount, "USD", subject.token)
    answer_payment[answer.reference] = payment
    return answer, payment, key


# ---------------------------------------------------------------- requests


async def test_a_charge_is_accepted_under_our_key_for_the_amount_asked(
    subject: Subject, adapter: PaymentProvider
) -> None:
    answer, _, key = await charge(subject, adapter, 2_500)
    assert answer.reference and answer.idempotency_key == key
    assert (answer.amount, answer.currency) == (2_500, "USD")


async def test_a_retried_charge_sends_the_same_key(subject: Subject, adapter: PaymentProvider) -> None:
    first, payment, key = await charge(subject, adapter)
    again = await adapter.charge(key, payment, 2_500, "USD", subject.token)
    assert first.idempotency_key == again.idempotency_key == key
    if subject.stateful:
        assert again.reference == first.reference  # one charge at the provider, whatever the retries


async def test_a_refund_of_a_settled_charge_is_accepted_under_its_own_key(
    subject: Subject, adapter: PaymentProvider
) -> None:
    charged, payment, charge_key = await charge(subject, adapter, 2_500)
    await subject.settled(charged)
    refund_key = str(uuid.uuid4())
    answer = await adapter.refund(refund_key, payment, charged.reference, 1_000, "USD")
    assert answer.reference and answer.reference != charged.reference
    assert answer.idempotency_key == refund_key != charge_key
    assert (answer.amount, answer.currency) == (1_000, "USD")


async def test_a_refused_request_is_final_and_carries_no_secret(subject: Subject, served: Config) -> None:
    refuser = subject.refuser(served)
    try:
        with pytest.raises(ProviderRejected) as refused:
            # The simulator knows no such token; stripe-mock takes no live key.
            await refuser.charge(str(uuid.uuid4()), str(uuid.uuid4()), 2_500, "USD", "tok_unknown")
    finally:
        await refuser.stop()
    assert 400 <= refused.value.status < 500
    assert subject.secret_in_refusal not in str(refused.value) + repr(refused.value.body)


async def test_an_unreachable_provider_is_unavailable_then_the_circuit_opens(subject: Subject, served: Config) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    provider = dataclasses.replace(
        served.provider, port=int(nowhere.rsplit(":", 1)[1]), backoff_s=0.01, max_attempts=3, breaker_threshold=5
    )
    gone = subject.connect(dataclasses.replace(served, provider=provider, stripe=dataclasses.replace(
        served.stripe, api_base=nowhere)))  # fmt: skip
    try:
        with pytest.raises(ProviderUnavailable, match="failed 3 times"):
            await gone.charge(str(uuid.uuid4()), str(uuid.uuid4()), 100, "USD", subject.token)
        # Two more failures reach the breaker's 5: the third attempt is not made.
        with pytest.raises(ProviderUnavailable, match="circuit open"):
            await gone.charge(str(uuid.uuid4()), str(uuid.uuid4()), 100, "USD", subject.token)
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable, match="circuit open"):
            await gone.refund(str(uuid.uuid4()), str(uuid.uuid4()), "ref", 100, "USD")
        assert time.monotonic() - started < 0.5  # not even tried
    finally:
        await gone.stop()


# ---------------------------------------------------------------- webhooks


@pytest.mark.parametrize(
    ("kind", "status", "failure"),
    [("charge", "succeeded", None), ("charge", "failed", "card_declined"), ("refund", "succeeded", None),
     ("refund", "failed", "expired_or_canceled_card")],
)  # fmt: skip
async def test_a_signed_event_about_our_object_becomes_a_report_in_our_words(
    subject: Subject, adapter: PaymentProvider, kind: str, status: str, failure: str | None
) -> None:
    answer, payment, key = await charge(subject, adapter, 2_500)
    raw = subject.event(kind, status, answer, payment, key, failure)
    reports = subject.read(subject.sign(raw, int(time.time())), raw)
    assert [(r.kind, r.status, r.failure_reason) for r in reports] == [(kind, status, failure)]
    report = reports[0]
    assert (report.payment_id, report.operation_id, report.reference) == (payment, key, answer.reference)
    assert (report.amount, report.currency) == (2_500, "USD")
    assert report.event_id == json.loads(raw)["id"]


async def test_a_forged_altered_or_stale_event_is_refused_with_401(
    subject: Subject, adapter: PaymentProvider, config: Config
) -> None:
    answer, payment, key = await charge(subject, adapter)
    raw = subject.event("charge", "succeeded", answer, payment, key, None)
    now = int(time.time())
    stale = now - config.provider.webhook_tolerance_s - 60
    for headers, body in [
        (subject.forge(raw, now), raw),
        (subject.sign(raw, stale), raw),
        (subject.sign(raw, now), raw.replace(b"2500", b"2600")),
        ({}, raw),
    ]:
        with pytest.raises(ApiError) as refused:
            subject.read(headers, body)
        assert (refused.value.status, refused.value.code) == (401, "invalid_signature")
