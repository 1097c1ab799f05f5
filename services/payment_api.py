"""Payment REST API (aiohttp, port 8080): create, get and refund payments; provider webhooks.

Writes publish an event keyed by payment id and return; the saga runs in the payment
worker. Reads come from the PostgreSQL views, optionally waiting for a terminal status.

    python -m services.payment_api
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
from aiohttp import web

from connectors import payment_views as views
from connectors.config import Config, ProviderConfig, load_config
from connectors.credentials import PAYMENT_API
from connectors.logs import setup_logging
from connectors.lru import LruCache
from connectors.pg_roles import PAYMENT_API as PAYMENT_API_ROLE
from connectors.projections import ts
from connectors.providers import offered
from connectors.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from connectors.topics import PAYMENT_CREATED, PAYMENT_FAILED, PAYMENT_REFUND_REQUESTED, PAYMENT_SUCCEEDED
from domain import payment as domain
from domain.access import Action, Principal
from domain.events import EventMeta
from domain.ids import derive_id
from domain.money import Money
from services.admission import ADMISSION, TICKET, Admission
from services.http import (
    CONFIG,
    MAX_WAIT_S,
    OUTCOMES,
    POOL,
    PUBLISHER,
    ApiError,
    Field,
    authorize,
    command_resources,
    parse_object,
    path_uuid,
    read_fields,
    read_query,
    read_raw,
    require,
    serve,
    service_app,
)
from services.idempotency import Answer, Keyed, keyed_body, respond
from services.openapi import Operation, document
from services.payment_reads import (
    WALLETS,
    body_knowing,
    known_wallet,
    knows_all_of,
    payment_body,
    wait_for_payment,
)
from services.payment_search import SEARCH_OPERATION
from services.provider_webhooks import (
    STRIPE_OPERATION,
    WEBHOOK_REFUSALS,
    ProviderReport,
    load_webhook_secret,
    publish_reports,
    simulator_report,
)
from services.response_bodies import PAYMENT, REFUND_ACCEPTED, WEBHOOK_RECEIVED
from streams.envelope import actor_fields, now_ms, to_record

log = logging.getLogger("payment_api")


PAYMENT_BODY = {
    "user_id": Field("uuid"),
    "amount": Field("amount"),
    "currency": Field("currency"),
    "payment_method_type": Field("enum:wallet|external"),
    "wallet_id": Field("uuid", required=False),
    "provider": Field("string", required=False, max_length=50),
    "token": Field("string", required=False, max_length=200),
    "description": Field("string", required=False, multiline=True),
}
REFUND_BODY = {"amount": Field("amount", required=False), "reason": Field("string", required=False, multiline=True)}
GET_QUERY = {"wait": Field("number", required=False, minimum=0, maximum=MAX_WAIT_S)}
PAYMENT_ID = {"payment_id": Field("uuid")}
# A POST may answer a wallet payment from its terminal event before the view has it; a refund
# asked right after waits this long for the view to catch up instead of refusing it.
REFUND_VIEW_WAIT_S = 3.0
LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: a later provider clock is not a clock
# What we read of a provider's event; providers add fields over time, so others are ignored.
WEBHOOK = {
    "id": Field("string", max_length=255),
    "created": Field("int", minimum=0, maximum=LAST_MS),
    "data": Field(
        "object",
        fields={
            "id": Field("string", max_length=255),
            "object": Field("enum:charge|refund"),
            "status": Field("enum:succeeded|failed|pending"),
            "amount": Field("amount"),
            "currency": Field("currency"),
            "failure_reason": Field("string", required=False),
            # We send our operation id as the provider's idempotency key; it comes back here.
            "metadata": Field(
                "object", fields={"payment_id": Field("uuid"), "operation_id": Field("uuid", required=False)}
            ),
        },
    ),
}


async def create_payment(request: web.Request) -> web.Response:
    caller = require(request, Action.CREATE_PAYMENT)
    async with request.app[ADMISSION].admitted("create_payment") as ticket:
        request[TICKET] = ticket
        return await _create_payment(request, caller)


async def _create_payment(request: web.Request, caller: Principal) -> web.Response:
    body = await keyed_body(request, PAYMENT_BODY)
    if not caller.privileged and body["user_id"] != caller.subject:
        raise ApiError(403, "forbidden", "a user pays only as themselves", "user_id")
    pool = request.app[POOL]

    async def run(keyed: Keyed | None) -> Answer:
        # The key names the payment: a retry after a crash publishes the same payment again,
        # which the worker applies once.
        return await _create(request, caller, body, keyed.id("payment") if keyed else str(uuid.uuid4()))

    async def current(answer: Answer) -> Answer:
        status, sent = answer
        row = await views.get_payment(pool, sent["id"])
        shown = None if row is None else await payment_body(pool, row)
        if shown is None or not knows_all_of(shown, sent):
            return answer  # the views have not caught up with what was answered: never replay an older state
        return status, shown

    return await respond(request, request.app[CONFIG].payment_api, caller, body, run, current)


async def _create(
    request: web.Request, caller: Principal, body: dict[str, Any], payment_id: str
) -> tuple[int, dict[str, Any]]:
    config = request.app[CONFIG]
    pool = request.app[POOL]
    method = body["payment_method_type"]
    if method == "wallet":
        await _check_wallet(request, pool, body)
    else:
        for name in ("provider", "token"):
            if body[name] is None:
                raise ApiError(400, "missing_field", f"field {name!r} is required for an external payment", name)
        if body["provider"] not in offered(config):
            choices = " or ".join(repr(name) for name in offered(config))
            raise ApiError(422, "unknown_provider", f"provider must be {choices}", "provider")
        if body["wallet_id"] is not None:
            raise ApiError(400, "unknown_field", "wallet_id is only for a wallet payment", "wallet_id")
        # Its outcome waits on the provider's webhook: a long wait here is not our lag.
        request[TICKET].waits_on_others()
    now = now_ms()
    created = domain.RequestPayment(
        EventMeta(derive_id("PaymentCreated", payment_id), now, payment_id, None, *actor_fields(caller)),
        payment_id,
        body["user_id"],
        Money(body["amount"], body["currency"]),
        method,
        body["wallet_id"],
        body["provider"],
        body["token"],
        body["description"],
        now + int(config.provider.deadline_s * 1000) if method == "external" else None,
    )
    # Registered before publishing, so the terminal event cannot slip past; waiting on it
    # instead of polling PostgreSQL saves a query per waiter every POLL_S.
    timeout = config.payment_api.outcome_timeout_s
    outcomes = request.app[OUTCOMES]
    future = await outcomes.register(payment_id)
    await request.app[PUBLISHER].publish(PAYMENT_CREATED.name, payment_id, to_record(created))
    decided = await outcomes.wait(payment_id, future, timeout)
    if decided is not None and method == "wallet":
        # A wallet payment's terminal event says all the view would: answer without reading it.
        return 201, views.decided_json(body, payment_id, now, decided, created.deadline_at)
    remaining = max(0.0, timeout - (now_ms() - now) / 1000)
    row = await wait_for_payment(pool, payment_id, remaining, settled=decided is not None)
    if row is not None and decided is not None:
        # The view's operations follow their own topic and can trail its terminal row.
        return 201, await body_knowing(
            pool, row, views.decided_json(body, payment_id, now, decided, created.deadline_at)
        )
    if row is not None:
        return 201, await payment_body(pool, row)
    return 201, {
        "id": payment_id,
        "user_id": body["user_id"],
        "amount": body["amount"],
        "currency": body["currency"],
        "payment_method_type": method,
        "wallet_id": body["wallet_id"],
        "provider": body["provider"],
        "description": body["description"],
        "status": "processing",
        "status_url": f"/api/v1/payments/{payment_id}",
    }


async def _check_wallet(request: web.Request, pool: asyncpg.Pool, body: dict[str, Any]) -> None:
    """Refuse what the wallet would reject anyway, with a clearer error; the worker still decides."""
    if body["wallet_id"] is None:
        raise ApiError(400, "missing_field", "field 'wallet_id' is required for a wallet payment", "wallet_id")
    for name in ("provider", "token"):
        if body[name] is not None:
            raise ApiError(400, "unknown_field", f"{name} is only for an external payment", name)
    wallet = await known_wallet(request.app[WALLETS], pool, body["wallet_id"])
    not_found = ApiError(404, "wallet_not_found", f"wallet {body['wallet_id']} does not exist", "wallet_id")
    authorize(request, Action.CREATE_PAYMENT, None if wallet is None else str(wallet["user_id"]), not_found)
    assert wallet is not None
    if wallet["currency"] != body["currency"]:
        raise ApiError(
            422,
            "currency_mismatch",
            f"the wallet holds {wallet['currency']}, the payment is in {body['currency']}",
            "currency",
        )
    if str(wallet["user_id"]) != body["user_id"]:
        raise ApiError(422, "wallet_not_owned", "the wallet does not belong to this user", "wallet_id")


async def get_payment(request: web.Request) -> web.Response:
    payment_id = path_uuid(request, "payment_id")
    wait = read_query(request, GET_QUERY)["wait"] or 0.0
    pool = request.app[POOL]
    row = await wait_for_payment(pool, payment_id, wait)
    not_found = ApiError(404, "payment_not_found", f"payment {payment_id} not found", "payment_id")
    authorize(request, Action.READ_PAYMENT, None if row is None else str(row["user_id"]), not_found)
    assert row is not None
    return web.json_response(await payment_body(pool, row))


async def refund_payment(request: web.Request) -> web.Response:
    caller = require(request, Action.REFUND_PAYMENT)
    payment_id = path_uuid(request, "payment_id")
    body = await keyed_body(request, REFUND_BODY)
    pool = request.app[POOL]

    async def run(keyed: Keyed | None) -> Answer:
        return await _refund(request, caller, payment_id, body, keyed.id("refund", payment_id) if keyed else None)

    async def current(answer: Answer) -> Answer:
        # The refund's outcome as the views know it now (payment_refunds follows the refund's
        # events: a deadline failure or a reconciled late success included).
        status, sent = answer
        decided = await views.get_refund(pool, sent["refund_id"])
        return status, {**sent, "status": decided["status"] if decided else sent["status"]}

    return await respond(request, request.app[CONFIG].payment_api, caller, body, run, current)


async def _refund(
    request: web.Request, caller: Principal, payment_id: str, body: dict[str, Any], refund_id: str | None
) -> Answer:
    pool = request.app[POOL]
    row = await wait_for_payment(pool, payment_id, REFUND_VIEW_WAIT_S, settled=True)
    if row is None:
        raise ApiError(404, "payment_not_found", f"payment {payment_id} not found", "payment_id")
    if row["status"] == "refunded":
        raise ApiError(409, "already_refunded", "the payment was already refunded")
    if row["status"] not in domain.REFUNDABLE:
        raise ApiError(409, "not_refundable", f"only a completed payment can be refunded; it is {row['status']}")
    refund_id = refund_id or str(uuid.uuid4())
    requested_at = now_ms()
    async with pool.acquire() as conn, conn.transaction():
        existing = await views.get_refund(conn, refund_id)
        if existing is not None:  # the same key ran before and failed after reserving: same refund
            return _refund_accepted(payment_id, refund_id, existing["amount"], row["currency"])
        outcome, amount = await views.reserve_refund(
            conn,
            payment_id,
            refund_id,
            body["amount"],
            row["currency"],
            row["amount"],
            body["reason"],
            ts(requested_at),
        )
        if outcome == "already_refunded":
            raise ApiError(409, "already_refunded", "the whole amount is already refunded or being refunded")
        if outcome == "exceeds":
            raise ApiError(422, "amount_exceeds_refundable", f"only {amount} {row['currency']} is left", "amount")
        requested = domain.RefundRequested(
            EventMeta(derive_id("RefundRequested", refund_id), requested_at, payment_id, None, *actor_fields(caller)),
            payment_id,
            refund_id,
            Money(amount, row["currency"]),
            body["reason"],
        )
        # Published inside the transaction: if Kafka refuses, the reservation rolls back. If
        # Kafka accepts and the commit fails, the projector writes the reservation from the
        # event (refund_reservations), so the log stays the truth.
        await request.app[PUBLISHER].publish(PAYMENT_REFUND_REQUESTED.name, payment_id, to_record(requested))
    return _refund_accepted(payment_id, refund_id, amount, row["currency"])


def _refund_accepted(payment_id: str, refund_id: str, amount: int, currency: str) -> Answer:
    return 202, {
        "refund_id": refund_id,
        "payment_id": payment_id,
        "amount": amount,
        "currency": currency,
        "status": "pending",
        "status_url": f"/api/v1/payments/{payment_id}",
    }


async def provider_webhook(request: web.Request) -> web.Response:
    """handleExternalWebhooks: verify, then put the update on external-provider-events."""
    config = request.app[CONFIG].provider
    provider = request.match_info["provider"]
    if provider != config.name:
        raise ApiError(404, "unknown_provider", f"no provider {provider!r}", "provider")
    raw = await read_raw(request)
    try:
        reports = read_simulator_webhook(config, request.headers, raw, int(time.time()))
    except ApiError as exc:
        if exc.status == 401:
            log.warning("webhook from %s refused: %s", provider, exc.message)
        raise
    await publish_reports(request, provider, reports)
    return web.json_response({"received": True})


def read_simulator_webhook(
    config: ProviderConfig, headers: Mapping[str, str], raw: bytes, now: int
) -> list[ProviderReport]:
    """The simulator's side of the webhook contract (Stripe's: provider_webhooks.read_stripe_webhook)."""
    timestamp, signature = headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER)
    problem = verify(config.webhook_secret, timestamp, signature, raw, now, config.webhook_tolerance_s)
    if problem is not None:
        raise ApiError(401, "invalid_signature", problem)
    return [simulator_report(read_fields(parse_object(raw), WEBHOOK, ignore_unknown=True))]


resources = command_resources(
    PAYMENT_API,
    PAYMENT_API_ROLE,
    [PAYMENT_SUCCEEDED.name, PAYMENT_FAILED.name],
    lambda event: [event["payment_id"]],
    pool_size=20,
)


NOT_FOUND = "no such payment, or not the caller's (payment_not_found)"  # alike: nothing is told of others'
OPERATIONS = [
    Operation(
        "POST",
        "/api/v1/payments",
        create_payment,
        "create a payment",
        body=PAYMENT_BODY,
        idempotent=True,
        answers={201: ("the payment: decided, or processing with a status_url to poll", PAYMENT)},
        admitted=True,
        refusals={
            400: "wallet_id, provider or token missing for its kind of payment, or given for the other",
            404: "the wallet does not exist or is not the caller's (wallet_not_found)",
            422: "unknown_provider, currency_mismatch, wallet_not_owned",
        },
    ),
    SEARCH_OPERATION,
    Operation(
        "GET",
        "/api/v1/payments/{payment_id}",
        get_payment,
        "a payment, optionally waiting",
        PAYMENT_ID,
        GET_QUERY,
        answers={200: ("the payment as the views hold it", PAYMENT)},
        refusals={404: NOT_FOUND},
    ),
    Operation(
        "POST",
        "/api/v1/payments/{payment_id}/refund",
        refund_payment,
        "refund in full or in part (operators)",
        PAYMENT_ID,
        body=REFUND_BODY,
        idempotent=True,
        answers={202: ("accepted: the outcome follows on the payment", REFUND_ACCEPTED)},
        refusals={404: NOT_FOUND, 409: "already_refunded, not_refundable", 422: "amount_exceeds_refundable"},
    ),
    STRIPE_OPERATION,  # before the simulator's route, which would take "stripe" for its {provider}
    Operation(
        "POST",
        "/api/v1/webhooks/{provider}",
        provider_webhook,
        "provider webhook, HMAC-signed",
        {"provider": Field("string", max_length=50)},
        body=WEBHOOK,
        public=True,
        raw_body=True,
        answers={200: ("received and published", WEBHOOK_RECEIVED)},
        refusals=WEBHOOK_REFUSALS,
    ),
]


def create_app(config: Config) -> web.Application:
    routes = [op.route() for op in OPERATIONS]
    app = service_app("payment-api", config, routes, resources, document("Payment API", OPERATIONS))
    app[ADMISSION] = Admission.of(config.payment_api)
    app[WALLETS] = LruCache(config.payment_api.cache_entries)
    load_webhook_secret(app)
    return app


def main() -> None:
    config = load_config()
    setup_logging(config, "payment-api")
    serve(create_app(config), config, "payment-api", config.payment_api.host, config.payment_api.port)


if __name__ == "__main__":
    main()
