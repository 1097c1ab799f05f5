"""The money auditor on the real log: a violation written on purpose is named within seconds.

The planted event is a refund that says the whole payment was paid back while no money
moved: a raw producer puts it on payment.refunded, which no worker consumes, so it
touches nothing but the books (a planted overdraft would do as well, but the fault
suite's own checker reads every wallet on the log and would trip on it for ever)."""

from __future__ import annotations

import asyncio
import time
import urllib.request

from connectors.config import Config
from connectors.topics import PAYMENT_REFUNDED
from tests.integration.conftest import MoneyWitness
from tests.integration.test_payment_service import new_wallet, wallet_payment
from tests.support import Api, eventually
from tests.support.audit import auditor_get, forge_full_refund


async def test_a_refund_that_moved_no_money_written_to_the_log_is_reported_within_seconds(
    config: Config, money_witness: MoneyWitness, payment_api: Api, wallet_api: Api
) -> None:
    wallet_id, user_id = await new_wallet(wallet_api, 5_000)
    status, payment = await payment_api.post("/api/v1/payments", wallet_payment(user_id, wallet_id, 5_000))
    assert status == 201 and payment["status"] == "completed", payment
    payment_id = payment["id"]
    money_witness.planted.add(payment_id)
    where = await forge_full_refund(config, payment_id, 5_000)
    written_at = time.monotonic()

    async def reported() -> list[dict] | None:
        found = [v for v in await auditor_get(config, "/violations") if v["subject"] == payment_id]
        return found or None

    found = await eventually(reported, timeout=15, what="the auditor to report the forged refund")
    assert time.monotonic() - written_at < 15
    assert [(v["invariant"], v["at"], v["cleared"]) for v in found] == [("payment_matches_movements", where, False)], (
        found
    )
    assert "refunded 5000" in found[0]["message"] and "took 5000" in found[0]["message"]
    metrics = await eventually(lambda: _metrics(config), what="the violation counted on /metrics")
    assert 'money_invariant_violations_total{invariant="payment_matches_movements"}' in metrics
    assert 'money_invariant_violations_open{invariant="payment_matches_movements"}' in metrics
    page = await asyncio.to_thread(_read, config, "/")
    assert payment_id in page and PAYMENT_REFUNDED.name in page


def _read(config: Config, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{config.auditor.port}{path}", timeout=5) as response:
        return str(response.read().decode())


async def _metrics(config: Config) -> str | None:
    text = await asyncio.to_thread(_read, config, "/metrics")
    return text if "money_invariant_violations_total{" in text else None
