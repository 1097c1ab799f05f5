"""A stuck external payment (the simulator's `tok_no_answer`: the charge is accepted, answers
pending, and no webhook ever comes) diagnosed as the on-call operator would: from `payments
trace` and from the web console alone, each naming the provider's charge and the deadline; after
the deadline, the failed payment's operations still lead to that charge."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import aiohttp
from selenium import webdriver
from selenium.webdriver.common.by import By

from connectors.auth import issue_token
from connectors.config import Config
from connectors.topics import PAYMENT_CREATED
from domain import payment as domain
from domain.events import EventMeta
from domain.ids import derive_id
from domain.money import Money
from streams.envelope import now_ms, to_record
from tests.integration.kafka_helpers import codec
from tests.integration.test_console import json_lines, payments
from tests.integration.test_payment_service import external_payment, payment_in
from tests.integration.test_web_console import browser, console, log_in  # noqa: F401 - fixtures
from tests.support import Api, eventually
from tests.support.kafka import plant

# Long enough to look at the payment while it waits: the API gives provider.deadline_s (4 s in
# the test environment), and answers an external payment only once it is decided.
WAIT_S = 30


async def charge_at_simulator(http: aiohttp.ClientSession, config: Config, payment_id: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        async with http.get(f"{config.provider.base_url}/v1/objects?payment_id={payment_id}") as response:
            charges = [o for o in (await response.json())["data"] if o["object"] == "charge"]
        return charges[0] if charges else None

    charge: dict[str, Any] = await eventually(found, what=f"the simulator's charge for {payment_id}")
    return charge


async def create_waiting_payment(config: Config, deadline_ms: int) -> str:
    """A payment as the API publishes it, but with a deadline far enough to watch it wait."""
    payment_id = str(uuid.uuid4())
    user_id = str(uuid.uuid4())
    created = domain.RequestPayment(
        EventMeta(derive_id("PaymentCreated", payment_id), now_ms(), payment_id, None, user_id, ("user",)),
        payment_id,
        user_id,
        Money(2_500, "USD"),
        "external",
        None,
        config.provider.name,
        "tok_no_answer",
        "stuck at the provider",
        deadline_ms,
    )
    await plant(config, [(PAYMENT_CREATED.name, payment_id.encode(), codec.encode(to_record(created)))])
    return payment_id


def iso_ms(millis: int) -> str:
    return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC).isoformat()


def trace_time(millis: int) -> str:
    return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


async def test_a_stuck_external_payment_is_diagnosed_from_trace_and_console_and_keeps_its_reference(
    payment_system: Config,
    payment_api: Api,
    http: aiohttp.ClientSession,
    browser: webdriver.Chrome,  # noqa: F811 - the fixture
    console: str,  # noqa: F811 - the fixture
) -> None:
    config = payment_system
    deadline = now_ms() + WAIT_S * 1000
    payment_id = await create_waiting_payment(config, deadline)
    charge = await charge_at_simulator(http, config, payment_id)
    operation_id = domain.charge_operation_id(payment_id, "external")
    assert charge["status"] == "pending" and charge["metadata"]["operation_id"] == operation_id

    # The API: processing, until when, and the charge's operation under the id the provider got.
    async def pending_shown() -> dict[str, Any] | None:
        _, body = await payment_api.get(f"/api/v1/payments/{payment_id}")
        return body if body.get("operations") else None

    body = await eventually(pending_shown, what="the provider's pending answer in the views")
    assert body["status"] == "processing" and body["deadline_at"] == iso_ms(deadline)
    [op] = body["operations"]
    assert (op["id"], op["kind"], op["status"], op["reference"]) == (operation_id, "charge", "pending", charge["id"])
    assert op["deadline_at"] == iso_ms(deadline)

    # payments trace: what it waits for and until when, not "stopped after PaymentCreated".
    code, text, err = await payments("trace", payment_id)
    assert code == 0, err
    verdict = text.rstrip().splitlines()[-1]
    assert verdict == (
        f"payment {payment_id}: waiting for the provider's webhook until {trace_time(deadline)}: "
        f"charge {charge['id']} at {config.provider.name} (operation {operation_id}, pending)"
    ), text
    assert f"deadline_at={trace_time(deadline)}" in text and f"reference={charge['id']}" in text
    code, out, _ = await payments("trace", payment_id, "--json")
    summary = json_lines(out)[-1]["summary"]
    assert summary["waiting_on_provider"]["reference"] == charge["id"] and summary["terminal"] is False

    # The web console alone: the same verdict, the reference and the deadline on the payment's page.
    log_in(browser, console, issue_token(config.auth, "console-operator", ["operator"]))
    browser.get(f"{console}/payments/{payment_id}")
    page = browser.find_element(By.TAG_NAME, "main").text
    shown_verdict = browser.find_element(By.ID, "verdict").text
    assert shown_verdict.startswith(f"waiting for the provider's webhook until {trace_time(deadline)}"), page
    assert charge["id"] in shown_verdict and operation_id in page
    console_deadline = dt.datetime.fromtimestamp(deadline / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")
    assert console_deadline.replace("+00:00", "Z") in page, page
    assert now_ms() < deadline, "the diagnosis must happen while the payment waits: raise WAIT_S"

    # After the deadline: failed provider_timeout, and its operations still lead to the charge.
    failed = await payment_in(payment_api, payment_id, "failed", timeout=WAIT_S + 15)
    assert failed["reason_code"] == "provider_timeout"
    by_source = {o["source"]: o for o in failed["operations"]}
    assert by_source["deadline"]["reference"] == charge["id"]
    assert by_source["deadline"]["failure_code"] == "provider_timeout"
    assert (by_source["provider"]["id"], by_source["provider"]["reference"]) == (operation_id, charge["id"])
    code, text, _ = await payments("trace", payment_id)
    assert "reached terminal PaymentFailed" in text and f"reference={charge['id']}" in text.split("PaymentFailed")[0]


async def test_a_payment_made_through_the_api_fails_at_its_deadline_naming_the_charge(
    payment_system: Config, payment_api: Api, http: aiohttp.ClientSession
) -> None:
    status, created = await payment_api.post("/api/v1/payments", external_payment("tok_no_answer"))
    assert status in (201, 202), created
    failed = await payment_in(payment_api, created["id"], "failed", timeout=payment_system.provider.deadline_s + 10)
    charge = await charge_at_simulator(http, payment_system, created["id"])
    assert failed["reason_code"] == "provider_timeout" and failed["deadline_at"] is not None

    async def both_operations() -> dict[str, dict[str, Any]] | None:
        _, body = await payment_api.get(f"/api/v1/payments/{created['id']}")
        ops = {o["source"]: o for o in body["operations"]}
        return ops if {"provider", "deadline"} <= set(ops) else None

    ops = await eventually(both_operations, what="the charge's pending row and the deadline's failure")
    assert ops["provider"]["id"] == charge["metadata"]["operation_id"] and ops["provider"]["status"] == "pending"
    assert ops["provider"]["reference"] == ops["deadline"]["reference"] == charge["id"]
