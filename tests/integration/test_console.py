"""The `payments` console against the real services: trace, tail, dlq and rebuild."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from connectors.config import Config
from connectors.log_reader import partition_for
from connectors.topics import PAYMENT_DLQ, WALLET_MOVEMENT_REQUIRED, WALLET_MOVEMENT_UPDATES
from streams.processing import Processor, SourceMessage
from tests.integration.kafka_helpers import codec, events_for_key
from tests.integration.test_wallet_service import movement_command, open_wallet
from tests.support import Api, eventually
from tests.support.kafka import writer
from tests.support.postgres import inspect_as_owner


@pytest.fixture
async def db(config: Config):
    conn = await inspect_as_owner(config)
    yield conn
    await conn.close()


async def payments(*args: str, timeout: float = 90) -> tuple[int, str, str]:
    """Run the console as the operator would; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "console", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def balance_is(api: Api, wallet_id: str, expected: int) -> None:
    async def check() -> bool:
        status, body = await api.get(f"/api/v1/wallet/{wallet_id}")
        return status == 200 and body["balance"] == expected

    await eventually(check, what=f"wallet {wallet_id} with balance {expected}")


async def test_a_wallet_trace_lists_its_movements_in_order_with_timings(wallet_api: Api) -> None:
    wallet_id = await open_wallet(wallet_api, 10_000)
    status, expense = await wallet_api.post(
        f"/api/v1/wallet/{wallet_id}/movement", {"type": "expense", "amount": 2_500, "currency": "USD"}
    )
    assert status == 201, expense
    await balance_is(wallet_api, wallet_id, 7_500)

    code, out, err = await payments("trace", wallet_id, "--json")
    assert code == 0, err
    *events, summary = json_lines(out)
    # The opening's BalanceUpdated names no movement.
    movements = [
        e
        for e in events
        if e["event_type"] in ("MovementRequired", "MovementUpdated", "BalanceUpdated")
        and e["details"].get("movement_id")
    ]
    assert [e["event_type"] for e in movements] == ["MovementRequired", "MovementUpdated", "BalanceUpdated"] * 2
    assert [e["details"].get("amount") for e in movements[3:5]] == ["2500 USD", "2500 USD"]
    assert movements[5]["details"]["balance"] == "7500 USD"
    assert all(e["key"] == wallet_id for e in events)
    assert [e["timestamp_ms"] for e in events] == sorted(e["timestamp_ms"] for e in events)
    assert events[0]["hop_ms"] is None and all(isinstance(e["hop_ms"], int) and e["hop_ms"] >= 0 for e in events[1:])
    assert summary["summary"]["events"] == len(events) and "terminal" not in summary["summary"]

    code, text, _ = await payments("trace", wallet_id)
    assert code == 0 and " ms  wallet.movement_updates[" in text and "MovementUpdated" in text
    assert f"{len(events)} events on 3 topics over" in text


async def test_tail_decodes_an_event_produced_after_it_started(wallet_api: Api) -> None:
    wallet_id = await open_wallet(wallet_api, 0)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "console",
        "tail",
        WALLET_MOVEMENT_UPDATES.name,
        "--key",
        wallet_id,
        "--json",
        "--max",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        started = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert b"tailing wallet.movement_updates" in started
        status, body = await wallet_api.post(
            f"/api/v1/wallet/{wallet_id}/movement", {"type": "income", "amount": 321, "currency": "USD"}
        )
        assert status == 201, body
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
    [line] = json_lines(out.decode())
    assert line["event_type"] == "MovementUpdated" and line["event"]["movement_id"] == body["id"]
    assert line["details"]["amount"] == "321 USD" and line["key"] == wallet_id


async def test_a_poison_message_is_listed_with_its_reason(wallet_api: Api, config: Config) -> None:
    wallet_id = await open_wallet(wallet_api, 0)
    poison = b"\xc3\x01" + uuid.uuid4().bytes[:8] + b"console poison"
    producer = AIOKafkaProducer(**writer(config, WALLET_MOVEMENT_REQUIRED.name).aiokafka())
    await producer.start()
    try:
        await producer.send_and_wait(WALLET_MOVEMENT_REQUIRED.name, poison, key=wallet_id.encode())
    finally:
        await producer.stop()

    async def listed() -> dict[str, Any] | None:
        code, out, err = await payments("dlq", "list", "--json")
        assert code == 0, err
        return next((d for d in json_lines(out) if d["value"] == poison.hex()), None)

    letter = await eventually(listed, timeout=30, interval=0.5, what="the poison message in `dlq list`")
    assert (letter["key"], letter["source_topic"]) == (wallet_id, WALLET_MOVEMENT_REQUIRED.name)
    assert letter["error_type"] == "EventDecodeError" and "fingerprint" in letter["error_message"]
    assert letter["consumer"] and isinstance(letter["source_offset"], int)

    _, out, _ = await payments("dlq", "list")
    assert f"[{letter['partition']}]@{letter['offset']}" in out and "reason: EventDecodeError" in out
    _, out, _ = await payments("trace", wallet_id)
    assert "DeadLetter" in out and "reason=EventDecodeError" in out


async def test_replaying_a_dead_letter_applies_its_movement_once(wallet_api: Api, config: Config) -> None:
    wallet_id = await open_wallet(wallet_api, 1_000)
    await balance_is(wallet_api, wallet_id, 1_000)
    command = movement_command(wallet_id, "income", 700)
    original = codec.encode(command)
    producer = AIOKafkaProducer(**writer(config, PAYMENT_DLQ.name).aiokafka())  # as the worker dead-letters
    await producer.start()

    async def send(topic: str, key: bytes | None, record: dict[str, Any]) -> None:
        await producer.send_and_wait(topic, codec.encode(record), key=key)

    try:
        # As if the worker had given up on the command during an outage: it never reached the wallet.
        source = SourceMessage(
            WALLET_MOVEMENT_REQUIRED.name,
            partition_for(wallet_id, config.kafka.partitions),
            10**12 + uuid.uuid4().int % 10**9,
            wallet_id.encode(),
            original,
        )
        await Processor("console-test", codec.decode, send).dead_letter(source, ConnectionError("outage"), 3)
    finally:
        await producer.stop()

    code, out, err = await payments("dlq", "list", "--json")
    assert code == 0, err
    letter = next(d for d in json_lines(out) if d["value"] == original.hex())
    assert letter["original_event_type"] == "MovementRequired" and letter["error_type"] == "ConnectionError"

    replay = ("dlq", "replay", str(letter["offset"]), "--partition", str(letter["partition"]))
    code, out, err = await payments(*replay)
    assert code == 0, err
    assert f"replayed [{letter['partition']}]@{letter['offset']}" in out and WALLET_MOVEMENT_REQUIRED.name in out
    await balance_is(wallet_api, wallet_id, 1_700)
    status, movement = await wallet_api.get(f"/api/v1/movement/{command['movement_id']}")
    assert status == 200 and movement["status"] == "applied"

    code, _, err = await payments(*replay)  # the step is idempotent: a second replay changes nothing
    assert code == 0, err

    async def re_emitted() -> bool:
        outcomes = [
            e
            for e in await events_for_key(config, WALLET_MOVEMENT_UPDATES.name, wallet_id)
            if e.get("movement_id") == command["movement_id"]
        ]
        return len(outcomes) == 2

    await eventually(re_emitted, what="the second replay's outcome")
    await balance_is(wallet_api, wallet_id, 1_700)


async def test_rebuild_finds_no_difference_and_reports_a_tampered_row(wallet_api: Api, db: asyncpg.Connection) -> None:
    wallet_id = await open_wallet(wallet_api, 5_000)
    path = f"/api/v1/wallet/{wallet_id}/movement"
    _, expense = await wallet_api.post(path, {"type": "expense", "amount": 1_200, "currency": "USD"})
    status, _ = await wallet_api.post(path, {"type": "expense", "amount": 99_999, "currency": "USD"})
    assert status == 422  # rejected: a row with its reason
    status, _ = await wallet_api.post(
        f"/api/v1/movement/{expense['id']}/revert", {"reason": "test", "requested_by": "admin"}
    )
    assert status == 201
    await wallet_api.post(path, {"type": "income", "amount": 300, "currency": "USD"})
    await balance_is(wallet_api, wallet_id, 5_300)

    code, out, err = await payments("rebuild", timeout=180)
    assert code == 0, out + err
    assert "wallet_movements: live" in out and out.rstrip().endswith(
        "no difference: the views equal a rebuild from the log"
    )

    await db.execute("UPDATE wallets SET balance = balance + 1 WHERE id = $1", wallet_id)
    try:
        code, out, err = await payments("rebuild", timeout=180)
    finally:
        await db.execute("UPDATE wallets SET balance = balance - 1 WHERE id = $1", wallet_id)
    assert code == 1, out + err
    assert f"wallets id={wallet_id} differs: balance: live=5301 rebuilt=5300" in out


async def pay(payment_api: Api, wallet_api: Api, balance: int, amount: int) -> str:
    wallet_id = await open_wallet(wallet_api, balance)
    await balance_is(wallet_api, wallet_id, balance)
    _, wallet = await wallet_api.get(f"/api/v1/wallet/{wallet_id}")
    status, body = await payment_api.post(
        "/api/v1/payments",
        {
            "user_id": wallet["user_id"],
            "amount": amount,
            "currency": "USD",
            "payment_method_type": "wallet",
            "wallet_id": wallet_id,
            "description": "console test",
        },
    )
    assert status == 201, body

    async def final() -> bool:
        _, got = await payment_api.get(f"/api/v1/payments/{body['id']}")
        return got.get("status") in ("completed", "failed")

    await eventually(final, what=f"payment {body['id']} finished")
    return str(body["id"])


async def test_the_trace_of_a_completed_wallet_payment_crosses_into_the_wallet(
    payment_api: Api, wallet_api: Api
) -> None:
    payment_id = await pay(payment_api, wallet_api, 5_000, 1_500)
    code, out, err = await payments("trace", payment_id, "--json")
    assert code == 0, err
    *events, summary = json_lines(out)
    assert [e["event_type"] for e in events] == [
        "PaymentCreated",
        "MovementRequired",
        "MovementUpdated",
        "BalanceUpdated",
        "PaymentOperationCompleted",
        "PaymentSucceeded",
    ]
    assert events[2]["details"]["status"] == "applied" and events[3]["details"]["balance"] == "3500 USD"
    assert {e["correlation_id"] for e in events} == {payment_id}
    assert summary["summary"]["terminal"] is True and "PaymentSucceeded" in summary["summary"]["verdict"]
    code, text, _ = await payments("trace", payment_id)
    assert text.rstrip().endswith(f"payment {payment_id}: reached terminal PaymentSucceeded on payment.success")


async def test_the_trace_of_a_failed_wallet_payment_shows_the_reason(payment_api: Api, wallet_api: Api) -> None:
    payment_id = await pay(payment_api, wallet_api, 1_000, 1_001)
    code, out, err = await payments("trace", payment_id)
    assert code == 0, err
    assert "MovementUpdated" in out and "status=rejected" in out
    failed = next(line for line in out.splitlines() if "PaymentFailed" in line)
    assert "reason_code=insufficient_funds" in failed and "reason=" in failed
    assert out.rstrip().endswith("reached terminal PaymentFailed on payment.failed")


async def test_a_rebuild_of_payments_and_refunds_equals_what_the_live_projector_wrote(
    payment_api: Api, wallet_api: Api, db: asyncpg.Connection
) -> None:
    """A payment's events reach the views from several topics, often in one fetch: both the
    live projector and the rebuild write them as set-based upserts in rounds, and must agree
    row for row (a partial refund, then the rest, moves one row twice)."""
    completed = [await pay(payment_api, wallet_api, 5_000, amount) for amount in (1_000, 2_000)]
    failed = await pay(payment_api, wallet_api, 500, 501)
    for amount in (300, None):
        status, refund = await payment_api.post(
            f"/api/v1/payments/{completed[0]}/refund", {} if amount is None else {"amount": amount}
        )
        assert status == 202, refund

        async def refunded(amount: int | None = amount) -> bool:
            _, got = await payment_api.get(f"/api/v1/payments/{completed[0]}")
            return got["refunded_amount"] == (300 if amount else 1_000) and all(
                r["status"] == "succeeded" for r in got["refunds"]
            )

        await eventually(refunded, what=f"refund of {amount or 'the rest'} projected")

    code, out, err = await payments("rebuild", timeout=240)
    assert code == 0, out + err
    for table in ("payments", "payment_operations", "payment_refunds"):
        assert f"{table}: live" in out and f"{table}: live 0 rows" not in out, out
    assert out.rstrip().endswith("no difference: the views equal a rebuild from the log")
    statuses = await db.fetch("SELECT id::text, status FROM payments WHERE id = ANY($1::uuid[])", [*completed, failed])
    assert {r["id"]: r["status"] for r in statuses} == {
        completed[0]: "refunded",
        completed[1]: "completed",
        failed: "failed",
    }
