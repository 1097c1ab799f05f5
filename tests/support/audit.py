"""Asking the money auditor (services.auditor) what it found, as a second witness."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from connectors.avro import make_codec
from connectors.config import Config
from connectors.topics import PAYMENT_REFUNDED
from domain.events import EventMeta
from domain.money import Money
from domain.payment import PaymentRefunded
from services.auditor import AUDITED
from streams.envelope import to_record
from tests.support.kafka import reader, writer


async def end_offsets(config: Config, names: tuple[str, ...] = AUDITED) -> dict[str, int]:
    """'topic/partition' -> the offset the next message there will get."""
    consumer = AIOKafkaConsumer(**reader(config).aiokafka(), group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in names for p in range(config.kafka.partitions)]
        return {f"{tp.topic}/{tp.partition}": end for tp, end in (await consumer.end_offsets(parts)).items()}
    finally:
        await consumer.stop()


def _get(config: Config, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{config.auditor.port}{path}", timeout=5) as response:
        return json.loads(response.read())


async def auditor_get(config: Config, path: str) -> Any:
    return await asyncio.to_thread(_get, config, path)


async def open_violations_since(config: Config, since: dict[str, int]) -> list[dict[str, Any]] | str:
    """The violations not cleared whose event lies after `since`, once the auditor has read
    the log up to now and judged every payment; else what it is still doing."""
    upto = await end_offsets(config)
    status = await auditor_get(config, "/status")
    behind = [tp for tp, end in upto.items() if status["positions"].get(tp, 0) < end]
    if behind or status["unjudged_payments"]:
        return f"the auditor is behind on {len(behind)} partition(s), {status['unjudged_payments']} payment(s) unjudged"
    return [
        v
        for v in await auditor_get(config, "/violations")
        if not v["cleared"] and v["at"]["offset"] >= since.get(f"{v['at']['topic']}/{v['at']['partition']}", 0)
    ]


def describe(violation: dict[str, Any]) -> str:
    at = violation["at"]
    return f"{violation['invariant']} at {at['topic']}@{at['partition']}/{at['offset']}: {violation['message']}"


async def forge_full_refund(config: Config, payment_id: str, amount: int) -> dict[str, Any]:
    """A refund that says the whole payment was paid back while no money moved, where it landed.
    A raw producer puts it on payment.refunded, which no worker consumes, so it touches nothing
    but the books. Only the payment worker may write refunds: the forgery is a payment worker
    gone wrong."""
    forged = PaymentRefunded(
        EventMeta(str(uuid.uuid4()), int(time.time() * 1000), payment_id, None),
        payment_id,
        str(uuid.uuid4()),
        Money(amount, "USD"),
        Money(amount, "USD"),
        "refunded",
    )
    codec = make_codec(config.kafka.schema_registry_url or None)
    producer = AIOKafkaProducer(**writer(config, PAYMENT_REFUNDED.name).aiokafka(), acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            PAYMENT_REFUNDED.name, codec.encode(to_record(forged)), key=payment_id.encode()
        )
    finally:
        await producer.stop()
    return {"topic": PAYMENT_REFUNDED.name, "partition": sent.partition, "offset": sent.offset}
