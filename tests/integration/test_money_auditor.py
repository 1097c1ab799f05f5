"""The money auditor on the real log: a violation written on purpose is named within seconds.

The planted event is a refund that says the whole payment was paid back while no money
moved: a raw producer puts it on payment.refunded, which no worker consumes, so it
touches nothing but the books (a planted overdraft would do as well, but the fault
suite's own checker reads every wallet on the log and would trip on it for ever)."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid

from aiokafka import AIOKafkaProducer

from connectors.config import Config
from connectors.topics import PAYMENT_REFUNDED
from domain.events import EventMeta
from domain.money import Money
from domain.payment import PaymentRefunded
from streams.envelope import to_record
from tests.integration.conftest import MoneyWitness
from tests.integration.kafka_helpers import codec
from tests.integration.test_payment_service import new_wallet, wallet_payment
from tests.support import Api, eventually
from tests.support.audit import auditor_get
from tests.support.kafka import writer


async def test_a_refund_that_moved_no_money_written_to_the_log_is_reported_within_seconds(
    config: Config, money_witness: MoneyWitness, payment_api: Api, wallet_api: Api
) -> None:
    wallet_id, user_id = await new_wallet(wallet_api, 5_000)
    status, payment = await payment_api.post("/api/v1/payments", wallet_payment(user_id, wallet_id, 5_000))
    assert status == 201 and payment["status"] == "completed", payment
    payment_id = payment["id"]
    money_witness.planted.add(payment_id)
    forged = PaymentRefunded(
        EventMeta(str(uuid.uuid4()), int(time.time() * 1000), payment_id, None),
        payment_id,
        str(uuid.uuid4()),
        Money(5_000, "USD"),
        Money(5_000, "USD"),
        "refunded",
    )
    # Only the payment worker may write refunds: the forgery is a payment worker gone wrong.
    producer = AIOKafkaProducer(**writer(config, PAYMENT_REFUNDED.name).aiokafka(), acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            PAYMENT_REFUNDED.name, codec.encode(to_record(forged)), key=payment_id.encode()
        )
    finally:
        await producer.stop()
    written_at = time.monotonic()
    where = {"topic": PAYMENT_REFUNDED.name, "partition": sent.partition, "offset": sent.offset}

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
