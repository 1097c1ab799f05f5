"""A stand-in for an external payment provider, run as its own process (port 8090).

It behaves like a real one over HTTP: charges and refunds answer "pending" at once
and are settled later by a webhook to the payment API, signed with HMAC-SHA256 over
"timestamp.body". The Idempotency-Key makes a retried request the same object.
The card token chooses what happens:

    tok_success             succeeded after webhook_delay_s
    tok_decline             failed (card_declined)
    tok_late_success        succeeded after late_delay_s, past the payment's deadline
    tok_no_answer           no webhook at all
    tok_duplicate_webhooks  the same succeeded event delivered three times
    tok_out_of_order        "succeeded" delivered before the older "pending"
    tok_wrong_amount        succeeded, but for 100 minor units more than asked (and reported so)
    tok_wrong_currency      succeeded, but in another currency than asked (and reported so)

These charge succeed, and the token chooses what happens to the charge's first refund
(later refunds of the same charge succeed), the way a provider's test cards do:

    tok_refund_decline       the refund fails (expired_or_canceled_card); its amount is refundable again
    tok_refund_no_answer     no webhook for the refund at all
    tok_refund_late          the refund succeeds after late_delay_s, past its deadline
    tok_refund_wrong_amount  the refund succeeds for 1 minor unit less than asked (and reported so)

With SIMULATOR_WEBHOOKS=twice_out_of_order (the fault suite) every webhook of every
charge and refund is delivered twice, each time the final status before the older "pending".

    python -m simulator.provider
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from connectors.config import Config, load_config
from connectors.logs import setup_logging
from connectors.metrics import http_metrics_middleware, metrics_handler
from connectors.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from services.http import ApiError, answers, error_middleware, health, readiness

log = logging.getLogger("provider_simulator")

CONFIG = web.AppKey("config", Config)
REFUND_TOKENS = frozenset({"tok_refund_decline", "tok_refund_no_answer", "tok_refund_late", "tok_refund_wrong_amount"})
TOKENS = frozenset(
    {
        "tok_success",
        "tok_decline",
        "tok_late_success",
        "tok_no_answer",
        "tok_duplicate_webhooks",
        "tok_out_of_order",
        "tok_wrong_amount",
        "tok_wrong_currency",
    }
    | REFUND_TOKENS
)
# Kept by the simulator, never shown: what an object will become and how its refunds behave.
PRIVATE = frozenset({"final_status", "token", "refunds_made"})


class Simulator:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.objects: dict[str, dict[str, Any]] = {}  # by object id (ch_..., re_...)
        self.by_key: dict[str, tuple[str, str]] = {}  # idempotency key -> (request hash, object id)
        self.tasks: set[asyncio.Task[None]] = set()
        self.session: aiohttp.ClientSession | None = None
        self.twice_out_of_order = os.environ.get("SIMULATOR_WEBHOOKS") == "twice_out_of_order"

    @property
    def webhook_url(self) -> str:
        api = self.config.payment_api
        return f"http://{api.host}:{api.port}/api/v1/webhooks/{self.config.provider.name}"

    def later(self, delay: float, obj: dict[str, Any], deliveries: list[str]) -> None:
        if self.twice_out_of_order and deliveries:
            deliveries = ["final", "pending", "final", "pending"]
        task = asyncio.create_task(self._settle(delay, obj, deliveries))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _settle(self, delay: float, obj: dict[str, Any], deliveries: list[str]) -> None:
        await asyncio.sleep(delay)
        pending = self._event(obj, "pending", int(time.time() * 1000) - 1)
        obj["status"] = obj["final_status"]
        if obj["object"] == "refund" and obj["status"] == "failed":
            self.objects[obj["charge"]]["refunded"] -= obj["amount"]  # nothing went back
        final = self._event(obj, obj["status"], int(time.time() * 1000))
        events = {"pending": pending, "final": final}
        for which in deliveries:
            await self._deliver(events[which])

    def _event(self, obj: dict[str, Any], status: str, created: int) -> dict[str, Any]:
        data = _public(obj)
        data["status"] = status
        return {
            "id": f"evt_{uuid.uuid5(uuid.NAMESPACE_URL, obj['id'] + status).hex}",
            "type": f"{obj['object']}.{status}",
            "created": created,
            "data": data,
        }

    async def _deliver(self, event: dict[str, Any]) -> None:
        """POST with the provider's usual retry schedule: a few attempts, growing pauses."""
        assert self.session is not None
        body = json.dumps(event).encode()
        for attempt in range(5):
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(self.config.provider.webhook_secret, timestamp, body),
            }
            try:
                async with self.session.post(self.webhook_url, data=body, headers=headers) as response:
                    if response.status < 300:
                        return
                    log.warning("webhook %s answered %s", event["id"], response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("webhook %s failed: %r", event["id"], exc)
            await asyncio.sleep(0.5 * 2**attempt)
        log.error("webhook %s abandoned", event["id"])


STATE = web.AppKey("state", Simulator)


def _idempotent(request: web.Request, sim: Simulator, body: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    key = request.headers.get("Idempotency-Key")
    if not key:
        raise ApiError(400, "missing_idempotency_key", "Idempotency-Key header is required")
    digest = json.dumps(body, sort_keys=True)
    seen = sim.by_key.get(key)
    if seen is None:
        return key, None
    if seen[0] != digest:
        raise ApiError(409, "idempotency_conflict", "key reused with different parameters")
    return key, sim.objects[seen[1]]


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in PRIVATE}


def _answer(request: web.Request, obj: dict[str, Any]) -> web.Response:
    """The object, with the Idempotency-Key it was made under echoed back, as Stripe does."""
    return web.json_response(_public(obj), headers={"Idempotency-Key": request.headers["Idempotency-Key"]})


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise ApiError(400, "malformed_json", "body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "body must be an object")
    return body


async def create_charge(request: web.Request) -> web.Response:
    sim = request.app[STATE]
    body = await _json(request)
    key, existing = _idempotent(request, sim, body)
    if existing is not None:
        return _answer(request, existing)
    token = body.get("token")
    amount = body.get("amount")
    if token not in TOKENS:
        raise ApiError(402, "invalid_token", f"unknown test token {token!r}", "token")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise ApiError(400, "invalid_amount", "amount must be a positive integer", "amount")
    currency = body.get("currency")
    if token == "tok_wrong_amount":
        amount += 100
    if token == "tok_wrong_currency":
        currency = "USD" if currency == "EUR" else "EUR"
    charge: dict[str, Any] = {
        "id": f"ch_{uuid.uuid4().hex}",
        "object": "charge",
        "amount": amount,
        "currency": currency,
        "status": "pending",
        "failure_reason": "card_declined" if token == "tok_decline" else None,
        "final_status": "failed" if token == "tok_decline" else "succeeded",
        "metadata": body.get("metadata") or {},
        "refunded": 0,
        "token": token,
        "refunds_made": 0,
    }
    sim.objects[charge["id"]] = charge
    sim.by_key[key] = (json.dumps(body, sort_keys=True), charge["id"])
    delay = sim.config.provider.webhook_delay_s
    if token == "tok_late_success":
        sim.later(sim.config.provider.late_delay_s, charge, ["final"])
    elif token == "tok_duplicate_webhooks":
        sim.later(delay, charge, ["final", "final", "final"])
    elif token == "tok_out_of_order":
        sim.later(delay, charge, ["final", "pending"])
    elif token != "tok_no_answer":
        sim.later(delay, charge, ["final"])
    return _answer(request, charge)


async def create_refund(request: web.Request) -> web.Response:
    sim = request.app[STATE]
    body = await _json(request)
    key, existing = _idempotent(request, sim, body)
    if existing is not None:
        return _answer(request, existing)
    charge = sim.objects.get(str(body.get("charge")))
    amount = body.get("amount")
    if charge is None or charge["object"] != "charge":
        raise ApiError(404, "no_such_charge", f"no charge {body.get('charge')!r}", "charge")
    if charge["status"] != "succeeded":
        raise ApiError(409, "charge_not_succeeded", "only a succeeded charge can be refunded", "charge")
    if (
        not isinstance(amount, int)
        or isinstance(amount, bool)
        or not 0 < amount <= charge["amount"] - charge["refunded"]
    ):
        raise ApiError(400, "invalid_amount", "amount exceeds what is left of the charge", "amount")
    behaviour = charge["token"] if charge["refunds_made"] == 0 else "tok_success"
    charge["refunds_made"] += 1
    if behaviour == "tok_refund_wrong_amount":
        amount -= 1
    charge["refunded"] += amount
    declined = behaviour == "tok_refund_decline"
    refund: dict[str, Any] = {
        "id": f"re_{uuid.uuid4().hex}",
        "object": "refund",
        "charge": charge["id"],
        "amount": amount,
        "currency": charge["currency"],
        "status": "pending",
        "failure_reason": "expired_or_canceled_card" if declined else None,
        "final_status": "failed" if declined else "succeeded",
        "metadata": body.get("metadata") or {},
    }
    sim.objects[refund["id"]] = refund
    sim.by_key[key] = (json.dumps(body, sort_keys=True), refund["id"])
    if behaviour == "tok_refund_late":
        sim.later(sim.config.provider.late_delay_s, refund, ["final"])
    elif behaviour != "tok_refund_no_answer":
        sim.later(sim.config.provider.webhook_delay_s, refund, ["final"])
    return _answer(request, refund)


async def list_objects(request: web.Request) -> web.Response:
    """Inspection for tests and operators: every object of one payment."""
    sim = request.app[STATE]
    payment_id = request.query.get("payment_id")
    found = [_public(o) for o in sim.objects.values() if o["metadata"].get("payment_id") == payment_id]
    return web.json_response({"data": found})


async def resources(app: web.Application) -> AsyncIterator[None]:
    sim = app[STATE]
    sim.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
    yield
    for task in list(sim.tasks):
        task.cancel()
    await asyncio.gather(*sim.tasks, return_exceptions=True)
    await sim.session.close()


async def can_deliver(request: web.Request) -> None:
    session = request.app[STATE].session
    if session is None or session.closed:
        raise RuntimeError("the webhook client is not open")


# Ready once it can send webhooks; it depends on nothing else.
ready = readiness(answers("webhooks", can_deliver))


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[http_metrics_middleware("provider-simulator"), error_middleware])
    app[CONFIG] = config
    app[STATE] = Simulator(config)
    app.cleanup_ctx.append(resources)
    app.add_routes(
        [
            web.get("/health", health),
            web.get("/ready", ready),
            web.get("/metrics", metrics_handler),
            web.post("/v1/charges", create_charge),
            web.post("/v1/refunds", create_refund),
            web.get("/v1/objects", list_objects),
        ]
    )
    return app


def main() -> None:
    config = load_config()
    setup_logging(config, "provider-simulator")
    web.run_app(
        create_app(config),
        host=config.provider.host,
        port=config.provider.port,
        print=lambda _: log.info("provider simulator on %s", config.provider.base_url),
    )


if __name__ == "__main__":
    main()
