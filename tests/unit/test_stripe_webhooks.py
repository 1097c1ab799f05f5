"""Stripe webhooks: the SDK's signature check and what each Stripe event becomes in our words.

Pure: no servers. The bodies follow Stripe's event shape (an Event whose data.object is the
PaymentIntent or Refund), with the metadata our adapter puts on every object it creates."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import stripe

from services.http import ApiError
from services.provider_webhooks import CHARGE_EVENTS, REFUND_EVENTS, read_stripe_webhook

SECRET = "whsec_unit_test_secret"
PAYMENT = str(uuid.uuid4())
OPERATION = str(uuid.uuid4())


def intent(**changes: Any) -> dict[str, Any]:
    obj = {
        "id": "pi_3Test",
        "object": "payment_intent",
        "amount": 2_500,
        "amount_received": 0,
        "currency": "usd",
        "status": "requires_payment_method",
        "metadata": {"payment_id": PAYMENT, "operation_id": OPERATION},
        "last_payment_error": None,
        "cancellation_reason": None,
    }
    return {**obj, **changes}


def refund(**changes: Any) -> dict[str, Any]:
    obj = {
        "id": "re_3Test",
        "object": "refund",
        "amount": 1_000,
        "currency": "usd",
        "status": "succeeded",
        "payment_intent": "pi_3Test",
        "metadata": {"payment_id": PAYMENT, "operation_id": OPERATION},
        "failure_reason": None,
    }
    return {**obj, **changes}


def event(kind: str, obj: dict[str, Any], created: int | None = None) -> bytes:
    body = {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": "2025-09-30.clover",
        "type": kind,
        "created": created if created is not None else int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }
    return json.dumps(body).encode()


def signed(raw: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(raw.decode(), secret, timestamp)
    return {"Stripe-Signature": header}


def read(raw: bytes, headers: dict[str, str] | None = None) -> tuple[list[Any], str | None]:
    return read_stripe_webhook(SECRET, 300, signed(raw) if headers is None else headers, raw)


@pytest.mark.parametrize(
    ("kind", "obj", "expected"),
    [
        ("payment_intent.succeeded", intent(status="succeeded", amount_received=2_500), ("succeeded", 2_500, None)),
        # What the provider took, not what was asked: the saga compares the two.
        ("payment_intent.succeeded", intent(status="succeeded", amount_received=2_400), ("succeeded", 2_400, None)),
        (
            "payment_intent.payment_failed",
            intent(last_payment_error={"code": "card_declined", "decline_code": "insufficient_funds"}),
            ("failed", 2_500, "card_declined"),
        ),
        (
            "payment_intent.payment_failed",
            intent(last_payment_error={"code": None, "decline_code": "lost_card"}),
            ("failed", 2_500, "lost_card"),
        ),
        ("payment_intent.payment_failed", intent(), ("failed", 2_500, "payment_failed")),
        (
            "payment_intent.canceled",
            intent(status="canceled", cancellation_reason="abandoned"),
            ("failed", 2_500, "abandoned"),
        ),
        ("payment_intent.processing", intent(status="processing"), ("pending", 2_500, None)),
        ("payment_intent.requires_action", intent(status="requires_action"), ("pending", 2_500, None)),
        ("payment_intent.created", intent(), ("pending", 2_500, None)),
    ],
)  # fmt: skip
def test_payment_intent_events_become_charge_reports(kind: str, obj: dict[str, Any], expected: tuple[Any, ...]) -> None:
    reports, ignored = read(event(kind, obj, created=1_790_000_000))
    assert ignored is None and len(reports) == 1
    report = reports[0]
    assert (report.status, report.amount, report.failure_reason) == expected
    assert (report.kind, report.reference, report.currency) == ("charge", "pi_3Test", "USD")
    assert (report.payment_id, report.operation_id, report.created_ms) == (PAYMENT, OPERATION, 1_790_000_000_000)


@pytest.mark.parametrize(
    ("kind", "status", "failure", "expected"),
    [
        ("refund.created", "pending", None, ("pending", None)),
        ("refund.created", "succeeded", None, ("succeeded", None)),
        ("refund.updated", "succeeded", None, ("succeeded", None)),
        ("refund.updated", "canceled", None, ("failed", "refund_failed")),
        ("refund.failed", "failed", "expired_or_canceled_card", ("failed", "expired_or_canceled_card")),
        ("charge.refund.updated", "requires_action", None, ("pending", None)),
    ],
)
def test_refund_events_become_refund_reports_by_the_refunds_status(
    kind: str, status: str, failure: str | None, expected: tuple[Any, ...]
) -> None:
    reports, _ = read(event(kind, refund(status=status, failure_reason=failure)))
    assert [(r.kind, r.reference, r.amount, r.currency, r.status, r.failure_reason) for r in reports] == [
        ("refund", "re_3Test", 1_000, "USD", *expected)
    ]


def test_charge_refunded_maps_the_refunds_it_carries_each_under_its_own_event_id() -> None:
    charge = {
        "id": "ch_3Test",
        "object": "charge",
        "payment_intent": "pi_3Test",
        "refunds": {"object": "list", "data": [refund(), refund(id="re_second", amount=500, metadata={})]},
    }
    raw = event("charge.refunded", charge)
    reports, ignored = read(raw)
    hook_id = json.loads(raw)["id"]
    assert ignored is None
    # The second refund was not made by us (no payment id): left out.
    assert [(r.event_id, r.reference, r.amount) for r in reports] == [(f"{hook_id}/re_3Test", "re_3Test", 1_000)]


def test_charge_refunded_without_its_refunds_is_acknowledged_and_maps_nothing() -> None:
    reports, ignored = read(event("charge.refunded", {"id": "ch_3Test", "object": "charge", "refunds": None}))
    assert reports == [] and ignored is not None and "refund" in ignored


@pytest.mark.parametrize(
    "kind", ["charge.succeeded", "charge.dispute.created", "customer.created", "payment_intent.unknown_future"]
)
def test_events_we_do_not_map_are_acknowledged_with_the_reason(kind: str) -> None:
    reports, ignored = read(event(kind, intent(status="succeeded")))
    assert reports == [] and ignored == f"{kind} is not mapped"


def test_an_object_without_our_metadata_is_not_ours() -> None:
    reports, ignored = read(event("payment_intent.succeeded", intent(metadata={})))
    assert reports == [] and ignored is not None and "payment_id" in ignored


def test_every_mapped_event_type_is_a_stripe_payment_intent_or_refund_event() -> None:
    assert all(kind.startswith("payment_intent.") for kind in CHARGE_EVENTS)
    assert all(kind.startswith(("refund.", "charge.refund.")) for kind in REFUND_EVENTS)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Stripe-Signature": ""},
        {"Stripe-Signature": "garbage"},
        {"Stripe-Signature": "t=notanumber,v1=abc"},
        signed(b"another body"),
        "wrong secret",
        "stale",
    ],
)
def test_a_missing_forged_or_stale_signature_is_401(headers: Any) -> None:
    raw = event("payment_intent.succeeded", intent(status="succeeded", amount_received=2_500))
    if headers == "wrong secret":
        headers = signed(raw, "whsec_not_ours")
    elif headers == "stale":
        headers = signed(raw, timestamp=int(time.time()) - 301)
    with pytest.raises(ApiError) as refused:
        read(raw, headers)
    assert (refused.value.status, refused.value.code, refused.value.field) == (
        401,
        "invalid_signature",
        "Stripe-Signature",
    )


def test_a_signature_within_the_tolerance_is_accepted() -> None:
    raw = event("payment_intent.succeeded", intent(status="succeeded", amount_received=2_500))
    reports, _ = read(raw, signed(raw, timestamp=int(time.time()) - 290))
    assert len(reports) == 1


@pytest.mark.parametrize(
    ("obj", "status", "field"),
    [
        (intent(amount="2500"), 422, "data.object.amount"),
        (intent(amount=0), 422, "data.object.amount"),
        (intent(currency="usdollar"), 422, "data.object.currency"),
        (intent(currency="xyz"), 422, "data.object.currency"),
        (intent(metadata={"payment_id": "not-a-uuid"}), 422, "data.object.metadata.payment_id"),
        (intent(metadata="x"), 422, "data.object.metadata"),
        (intent(last_payment_error={"code": "a\x00b"}), 422, "data.object.last_payment_error.code"),
        ({"object": "payment_intent"}, 400, "data.object.id"),
    ],
)
def test_a_signed_but_malformed_event_is_refused_naming_the_field(obj: Any, status: int, field: str) -> None:
    with pytest.raises(ApiError) as refused:
        read(event("payment_intent.payment_failed", obj))
    assert (refused.value.status, refused.value.field) == (status, field)


def test_signed_bytes_that_are_not_utf8_or_not_json_are_400() -> None:
    for raw, code in [(b'{"id": "\xff"}', "invalid_encoding"), (b'{"id": NaN}', "malformed_json")]:
        headers = {"Stripe-Signature": "t=1,v1=00"} if code == "invalid_encoding" else signed(raw)
        with pytest.raises(ApiError) as refused:
            read(raw, headers)
        assert (refused.value.status, refused.value.code) == (400, code)
