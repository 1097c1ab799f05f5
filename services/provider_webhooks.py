"""Provider webhooks become ProviderUpdate events on external-provider-events, whatever the
provider: each adapter's webhook reader verifies the signature and maps the provider's event
into ProviderReports (our vocabulary); `publish_reports` puts them on the log.

Stripe's (`POST /api/v1/webhooks/stripe`): the SDK checks `Stripe-Signature` (HMAC-SHA256
over "timestamp.body", 300 s tolerance), then the event is read as strictly as any input.
What each Stripe event becomes is in docs/providers.md and `CHARGE_EVENTS` / `REFUND_EVENTS`.
An event that is not about one of our payments (no payment_id in its metadata) or of a type
we do not map is acknowledged and published nowhere, so Stripe stops resending it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import stripe
from aiohttp import web

from connectors.stripe_provider import NAME as STRIPE
from connectors.stripe_secrets import load_stripe_secrets
from connectors.topics import EXTERNAL_PROVIDER_EVENTS
from domain.events import EventMeta
from domain.ids import derive_id
from domain.money import CURRENCIES
from services.http import CONFIG, MAX_AMOUNT, PUBLISHER, ApiError, Field, parse_object, read_fields, read_raw
from services.openapi import Operation
from services.response_bodies import WEBHOOK_RECEIVED
from streams.envelope import command_record, now_ms

log = logging.getLogger(__name__)

Status = Literal["succeeded", "failed", "pending"]


@dataclass(frozen=True)
class ProviderReport:
    """One object's state as a provider reported it, in our words."""

    event_id: str  # the provider's event id; unique per report
    payment_id: str
    reference: str  # the provider's id of the object
    operation_id: str | None  # our idempotency key, echoed in the object's metadata
    kind: Literal["charge", "refund"]
    status: Status
    amount: int
    currency: str
    failure_reason: str | None
    created_ms: int  # the provider's clock


def simulator_report(hook: dict[str, Any]) -> ProviderReport:
    """The provider simulator's event, read with payment_api.WEBHOOK: one object, our words already."""
    data, metadata = hook["data"], hook["data"]["metadata"]
    return ProviderReport(
        hook["id"],
        metadata["payment_id"],
        data["id"],
        metadata["operation_id"],
        data["object"],
        data["status"],
        data["amount"],
        data["currency"],
        data["failure_reason"],
        hook["created"],
    )


async def publish_reports(request: web.Request, provider: str, reports: list[ProviderReport]) -> None:
    for report in reports:
        update = command_record(
            "ProviderUpdate",
            EventMeta(derive_id("ProviderUpdate", provider, report.event_id), now_ms(), report.payment_id, None),
            provider=provider,
            provider_event_id=report.event_id,
            payment_id=report.payment_id,
            provider_reference=report.reference,
            operation_id=report.operation_id,
            kind=report.kind,
            status=report.status,
            amount={"amount": report.amount, "currency": report.currency},
            failure_reason=report.failure_reason,
            provider_timestamp=report.created_ms,
        )
        # A replay (same provider event id) carries the same event id; the saga applies it once.
        await request.app[PUBLISHER].publish(EXTERNAL_PROVIDER_EVENTS.name, report.payment_id, update)


# ---------------------------------------------------------------- Stripe

SIGNATURE_HEADER = "Stripe-Signature"
LAST_S = 253_402_300_799  # 9999-12-31T23:59:59Z
# A PaymentIntent's events, by what they mean for our charge. payment_failed leaves the intent
# in requires_payment_method, so the event type decides here, not the object's status.
CHARGE_EVENTS: dict[str, Status] = {
    "payment_intent.succeeded": "succeeded",
    "payment_intent.payment_failed": "failed",
    "payment_intent.canceled": "failed",
    "payment_intent.created": "pending",
    "payment_intent.processing": "pending",
    "payment_intent.requires_action": "pending",
    "payment_intent.amount_capturable_updated": "pending",
    "payment_intent.partially_funded": "pending",
}
# Events that carry a Refund object; the refund's own status decides.
REFUND_EVENTS = frozenset({"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"})
REFUND_STATUS: dict[str, Status] = {
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "failed",
    "pending": "pending",
    "requires_action": "pending",
}
# charge.refunded carries the Charge; endpoints on API versions before 2022-11-15 also get its refunds.
CHARGE_REFUNDED = "charge.refunded"
MAX_EMBEDDED_REFUNDS = 100

TEXT = Field("string", required=False, max_length=255)
METADATA = Field("object", fields={"payment_id": Field("uuid", required=False), "operation_id": Field("uuid", False)})
STRIPE_EVENT = {
    "id": Field("string", max_length=255),
    "type": Field("string", max_length=255),
    "created": Field("int", minimum=0, maximum=LAST_S),
    "data": Field(
        "object",
        fields={"object": Field("object", fields={"id": Field("string", max_length=255), "object": TEXT})},
    ),
}
PAYMENT_INTENT = {
    "id": Field("string", max_length=255),
    "amount": Field("amount"),
    "amount_received": Field("int", required=False, minimum=0, maximum=MAX_AMOUNT),
    "currency": Field("string", max_length=3),
    "metadata": METADATA,
    "last_payment_error": Field("object", required=False, fields={"code": TEXT, "decline_code": TEXT}),
    "cancellation_reason": TEXT,
}
REFUND = {
    "id": Field("string", max_length=255),
    "amount": Field("amount"),
    "currency": Field("string", max_length=3),
    "status": Field("enum:" + "|".join(REFUND_STATUS)),
    "metadata": METADATA,
    "failure_reason": TEXT,
}


def read_stripe_webhook(
    secret: str, tolerance_s: int, headers: Mapping[str, str], raw: bytes
) -> tuple[list[ProviderReport], str | None]:
    """(reports, why none) for a Stripe webhook; ApiError 401 if not signed by Stripe or stale,
    4xx naming the field if signed but not a Stripe event we can read."""
    try:
        payload = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_encoding", "the body is not valid UTF-8") from None
    try:
        stripe.WebhookSignature.verify_header(payload, headers.get(SIGNATURE_HEADER), secret, tolerance_s)
    except stripe.SignatureVerificationError as exc:
        # The SDK's message names what failed, never the expected signature.
        raise ApiError(401, "invalid_signature", str(exc.user_message), SIGNATURE_HEADER) from None
    event = parse_object(raw)
    envelope = read_fields(event, STRIPE_EVENT, ignore_unknown=True)
    kind, created_ms = envelope["type"], envelope["created"] * 1000
    obj = event["data"]["object"]
    if kind in CHARGE_EVENTS:
        found = [_intent_report(envelope["id"], CHARGE_EVENTS[kind], created_ms, obj)]
    elif kind in REFUND_EVENTS:
        found = [_refund_report(envelope["id"], created_ms, obj, "data.object.")]
    elif kind == CHARGE_REFUNDED:
        found = _embedded_refunds(envelope["id"], created_ms, obj)
        if not found:
            return [], "charge.refunded without its refunds: the refund.* events carry them"
    else:
        return [], f"{kind} is not mapped"
    ours = [report for report in found if report is not None]
    return ours, None if ours else "not about a payment of ours (no payment_id in the metadata)"


def _intent_report(event_id: str, status: Status, created_ms: int, obj: dict[str, Any]) -> ProviderReport | None:
    intent = read_fields(obj, PAYMENT_INTENT, ignore_unknown=True, prefix="data.object.")
    if intent["metadata"]["payment_id"] is None:
        return None
    amount = intent["amount"]
    if status == "succeeded" and intent["amount_received"] is not None:
        amount = intent["amount_received"]  # what was taken, which the saga checks against what was asked
    failure = None
    if status == "failed":
        error = intent["last_payment_error"] or {}
        failure = error.get("code") or error.get("decline_code") or intent["cancellation_reason"] or "payment_failed"
    return _report(event_id, intent, "charge", status, amount, failure, created_ms, "data.object.")


def _refund_report(event_id: str, created_ms: int, obj: Any, prefix: str) -> ProviderReport | None:
    if not isinstance(obj, dict):
        raise ApiError(422, "invalid_type", f"{prefix.rstrip('.')} must be an object", prefix.rstrip("."))
    refund = read_fields(obj, REFUND, ignore_unknown=True, prefix=prefix)
    if refund["metadata"]["payment_id"] is None:
        return None
    status = REFUND_STATUS[refund["status"]]
    failure = (refund["failure_reason"] or "refund_failed") if status == "failed" else None
    return _report(event_id, refund, "refund", status, refund["amount"], failure, created_ms, prefix)


def _embedded_refunds(event_id: str, created_ms: int, charge: dict[str, Any]) -> list[ProviderReport | None]:
    listed = charge.get("refunds")
    items = listed.get("data") if isinstance(listed, dict) else None
    if not isinstance(items, list):
        return []
    if len(items) > MAX_EMBEDDED_REFUNDS:
        raise ApiError(422, "too_long", "more refunds than one charge has", "data.object.refunds.data")
    reports = []
    for index, item in enumerate(items):
        report = _refund_report(event_id, created_ms, item, f"data.object.refunds.data.{index}.")
        # One event, several refunds: each report needs an id of its own.
        reports.append(report and replace(report, event_id=f"{event_id}/{report.reference}"))
    return reports


def _report(
    event_id: str,
    obj: dict[str, Any],
    kind: Literal["charge", "refund"],
    status: Status,
    amount: int,
    failure: str | None,
    created_ms: int,
    prefix: str,
) -> ProviderReport:
    currency = obj["currency"].upper()  # Stripe writes ISO codes in lower case
    if currency not in CURRENCIES:
        raise ApiError(422, "invalid_currency", f"{prefix}currency must be an ISO 4217 code", f"{prefix}currency")
    metadata = obj["metadata"]
    return ProviderReport(
        event_id,
        metadata["payment_id"],
        obj["id"],
        metadata["operation_id"],
        kind,
        status,
        amount,
        currency,
        failure,
        created_ms,
    )


async def stripe_webhook(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    if not config.stripe.enabled:
        raise ApiError(404, "unknown_provider", "stripe is not a provider of this deployment", "provider")
    raw = await read_raw(request)
    secret = request.app[STRIPE_WEBHOOK_SECRET]
    try:
        reports, ignored = read_stripe_webhook(secret, config.stripe.webhook_tolerance_s, request.headers, raw)
    except ApiError as exc:
        if exc.status == 401:
            log.warning("stripe webhook refused: %s", exc.message)
        raise
    if ignored is not None:
        log.info("stripe webhook acknowledged, nothing published: %s", ignored)
        return web.json_response({"received": True, "ignored": ignored})
    await publish_reports(request, STRIPE, reports)
    return web.json_response({"received": True})


STRIPE_WEBHOOK_SECRET = web.AppKey("stripe_webhook_secret", str)
WEBHOOK_REFUSALS = {
    401: "missing, wrong or stale signature (invalid_signature)",
    404: "not a provider of this deployment (unknown_provider)",
}
STRIPE_OPERATION = Operation(
    "POST",
    "/api/v1/webhooks/stripe",
    stripe_webhook,
    "Stripe webhook, verified by its Stripe-Signature (docs/providers.md)",
    body=STRIPE_EVENT,
    public=True,
    raw_body=True,
    answers={200: ("received; published, or acknowledged and ignored", WEBHOOK_RECEIVED)},
    refusals=WEBHOOK_REFUSALS,
)


def load_webhook_secret(app: web.Application) -> None:
    """At start: a deployment that offers Stripe without its secret refuses to start."""
    config = app[CONFIG]
    app[STRIPE_WEBHOOK_SECRET] = load_stripe_secrets(config).webhook_secret if config.stripe.enabled else ""
