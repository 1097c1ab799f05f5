"""Request ids: minted or kept at the edge, on every log line (plain and JSON), in every error
body, on every event a step publishes, and kept by the deadline sweep, which runs outside any
event. No server: an aiohttp app in process, fakes for the saga's ports."""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connectors.logs import ContextFilter, JsonFormatter, PlainFormatter
from connectors.topics import PAYMENT_OPERATION_COMPLETED
from connectors.tracing import (
    current_caller,
    current_request_id,
    current_traceparent,
    new_traceparent,
    outgoing_headers,
    request_id_from_headers,
    trace_id_of,
)
from services.http import ApiError, service_middlewares
from services.request_ids import REQUEST_ID_HEADER, path_template, request_id_of
from streams.envelope import to_record
from streams.payment_deadlines import DeadlineIndex
from streams.payment_steps import PaymentSteps
from tests.support.fakes import FakeDurable, FakeTable, Journal
from tests.unit.test_payment_steps import NOW, RefusingProvider, created


def record(message: str = "charged") -> logging.LogRecord:
    made = logging.LogRecord("payments", logging.INFO, __file__, 1, message, None, None)
    ContextFilter("payment-api").filter(made)
    return made


def test_a_log_line_carries_the_request_id_and_the_caller_in_both_formats() -> None:
    trace_id = uuid.uuid4().hex
    id_token, caller_token = current_request_id.set("req-12345678"), current_caller.set("alice")
    trace_token = current_traceparent.set(new_traceparent(trace_id))
    try:
        plain = PlainFormatter("payment-api").format(record())
        as_json = json.loads(JsonFormatter().format(record()))
    finally:
        current_traceparent.reset(trace_token)
        current_caller.reset(caller_token)
        current_request_id.reset(id_token)
    assert plain.endswith(f"charged request_id=req-12345678 caller=alice trace_id={trace_id}"), plain
    assert as_json["request_id"] == "req-12345678" and as_json["caller"] == "alice"
    assert as_json["trace_id"] == trace_id and as_json["message"] == "charged"


def test_a_line_outside_any_request_has_no_ids() -> None:
    assert PlainFormatter("worker").format(record()).endswith("payments: charged")
    assert "request_id" not in json.loads(JsonFormatter().format(record()))


def test_an_access_line_in_json_has_its_fields() -> None:
    made = record("GET /x 200 1.0 ms")
    for key, value in {"method": "GET", "route": "/x", "status": 200, "latency_ms": 1.0}.items():
        setattr(made, key, value)
    line = json.loads(JsonFormatter().format(made))
    assert (line["method"], line["route"], line["status"], line["latency_ms"]) == ("GET", "/x", 200, 1.0)


def test_a_safe_request_id_is_kept_and_anything_else_replaced_by_a_uuid() -> None:
    assert request_id_of("caller-id-0001") == "caller-id-0001"
    for unsafe in (None, "", "short", "with space in it", "x" * 65, "line\nbreak-forged"):
        minted = request_id_of(unsafe)
        assert minted != unsafe and uuid.UUID(minted).version == 4


def test_ids_leave_an_access_line_s_path() -> None:
    payment_id = str(uuid.uuid4())
    assert path_template(f"/api/v1/payments/{payment_id}/refund") == "/api/v1/payments/{id}/refund"


def test_the_request_id_travels_beside_the_traceparent_and_a_forged_one_is_dropped() -> None:
    token = current_request_id.set("req-12345678")
    try:
        headers = dict(outgoing_headers())
    finally:
        current_request_id.reset(token)
    assert headers == {"request_id": b"req-12345678"}
    assert request_id_from_headers([("request_id", b"req-12345678")]) == "req-12345678"
    assert request_id_from_headers([("request_id", b"bad id\n")]) is None


async def refused(_: web.Request) -> web.Response:
    raise ApiError(422, "invalid_amount", "amount must be positive", "amount")


async def test_a_direct_call_gets_a_request_id_minted_echoed_and_in_its_error_body() -> None:
    app = web.Application(middlewares=service_middlewares("unit"))  # outside /api/: no credential asked
    app.router.add_post("/refuse", refused)
    async with TestClient(TestServer(app)) as client:
        minted = await client.post("/refuse")
        given = await client.post("/refuse", headers={REQUEST_ID_HEADER: "caller-id-0001"})
        minted_body, given_body = await minted.json(), await given.json()
    assert minted.status == 422 and uuid.UUID(minted.headers[REQUEST_ID_HEADER]).version == 4
    assert minted_body["error"]["request_id"] == minted.headers[REQUEST_ID_HEADER]
    assert minted_body["error"]["field"] == "amount"
    assert given.headers[REQUEST_ID_HEADER] == "caller-id-0001" == given_body["error"]["request_id"]


class HeaderKeepingSender:
    """What a step publishes, with the headers the worker's sender would put on it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], dict[str, bytes]]] = []

    async def __call__(self, topic: str, key: bytes | None, record: dict[str, Any]) -> None:
        self.sent.append((topic, record, dict(outgoing_headers())))


async def test_the_deadline_sweep_keeps_the_trace_and_request_id_of_the_request_that_made_it_wait() -> None:
    journal = Journal()
    send = HeaderKeepingSender()
    steps = PaymentSteps(
        FakeTable(journal, "payments"),
        send,
        FakeDurable(journal),
        {"simulator": RefusingProvider()},
        60_000,
        DeadlineIndex(FakeTable(journal, "open_payments")),
        now=lambda: NOW,
    )
    waiting = dataclasses.replace(created("external", "stripe"), deadline_at=NOW + 4_000)
    trace_id = uuid.uuid4().hex
    trace_token = current_traceparent.set(new_traceparent(trace_id))
    id_token = current_request_id.set("create-req-0001")
    try:
        await steps.process_payment_method(to_record(waiting))
    finally:
        current_request_id.reset(id_token)
        current_traceparent.reset(trace_token)

    steps.now = lambda: NOW + 5_000
    await steps.enforce_deadlines(False, 0.0)  # a timer: no event, no trace in hand

    [(topic, timed_out, headers)] = send.sent
    assert topic == PAYMENT_OPERATION_COMPLETED.name and timed_out["status"] == "failed"
    assert trace_id_of(headers["traceparent"].decode()) == trace_id, "the payment's trace, not a new one"
    assert headers["request_id"] == b"create-req-0001"
    assert steps.load(waiting.payment_id) is not None, "the row's context does not bother the domain"
