"""No single event stops the read side, replays change nothing, and readiness tells the truth:
the projector on the real broker and PostgreSQL.

- An event PostgreSQL refuses (a NUL written by a raw producer, bypassing the API) lands in
  the dead-letter topic with its reason and coordinates, and a later movement on another
  wallet still reaches PostgreSQL within seconds.
- An event whose cause never arrives stalls its partition: readiness turns unready and the
  oldest unprojected event's age grows; past its patience it is dead-lettered and the
  projection moves on.
- Already-projected events fed again (stored offsets reset, or a stale balance update) change
  nothing and never move a balance backwards.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from connectors.config import Config
from connectors.log_reader import read_messages
from connectors.projections import WALLET_VIEWS, Projection
from connectors.topics import PAYMENT_DLQ, PAYMENT_REFUNDED, WALLET_BALANCE_UPDATE, WALLET_MOVEMENT_REQUIRED
from devtools.devctl import Supervisor
from domain.events import EventMeta
from domain.money import Money
from domain.payment import PaymentRefunded
from streams.envelope import command_record, new_meta, to_record
from tests.conftest import ensure_running
from tests.integration.conftest import MoneyWitness
from tests.integration.kafka_helpers import codec, end_offsets, events_for_key, publish
from tests.integration.test_wallet_service import open_wallet, projected_balance
from tests.support import Api, eventually
from tests.support.actors import TEST_OPERATOR
from tests.support.kafka import reader
from tests.support.postgres import inspect_as_owner


@pytest.fixture
async def db(config: Config) -> Any:
    conn = await inspect_as_owner(config)
    yield conn
    await conn.close()


async def projector_letters(config: Config, source_topic: str, key: str) -> list[dict[str, Any]]:
    parts = [TopicPartition(PAYMENT_DLQ.name, p) for p in range(config.kafka.partitions)]
    found = []
    async for message in read_messages(reader(config), parts):
        letter = codec.decode(message.value)
        if letter["consumer"].startswith("projector:") and letter["source_topic"] == source_topic:
            if letter["key"] == key.encode():
                found.append(letter)
    return found


async def projector_ready(config: Config) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{config.projector.metrics_port}/ready"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def test_an_event_postgres_refuses_is_dead_lettered_and_the_views_keep_moving(
    config: Config, wallet_api: Api, db: asyncpg.Connection
) -> None:
    poisoned, healthy = await open_wallet(wallet_api, 1_000), await open_wallet(wallet_api, 1_000)
    movement_id = str(uuid.uuid4())
    command = command_record(
        "MovementRequired",
        new_meta(actor=TEST_OPERATOR),
        movement_id=movement_id,
        wallet_id=poisoned,
        type="income",
        amount={"amount": 100, "currency": "USD"},
        reference="a\x00b",  # the API refuses this; a raw producer does not ask
        description=None,
        reverts_movement_id=None,
        payment_id=None,
    )
    await publish(config, WALLET_MOVEMENT_REQUIRED.name, poisoned, command)
    letters = await eventually(
        lambda: projector_letters(config, "wallet.movement_updates", poisoned), what="the projector's dead letter"
    )
    [letter] = letters
    assert letter["consumer"] == "projector:wallet_views"
    assert letter["error_type"] == "CharacterNotInRepertoireError" and "0x00" in letter["error_message"]
    assert codec.decode(letter["value"])["movement_id"] == movement_id
    # The projection moved on: a later movement on another wallet is in PostgreSQL within seconds.
    started = time.monotonic()
    status, _ = await wallet_api.post(
        f"/api/v1/wallet/{healthy}/movement", {"type": "income", "amount": 250, "currency": "USD"}
    )
    assert status == 201
    await projected_balance(db, healthy, 1_250, timeout=10)
    assert time.monotonic() - started < 10
    status, ready = await projector_ready(config)
    assert status == 200 and ready["dead_letters"]["wallet_views"] >= 1


async def test_an_event_whose_cause_never_arrives_stalls_readiness_then_is_dead_lettered(
    config: Config, payment_api: Api, money_witness: MoneyWitness
) -> None:
    payment_id = str(uuid.uuid4())  # no such payment: its creation will never be projected
    money_witness.planted.add(payment_id)
    orphan = PaymentRefunded(
        EventMeta(str(uuid.uuid4()), int(time.time() * 1000), payment_id, None),
        payment_id,
        str(uuid.uuid4()),
        Money(100, "USD"),
        Money(100, "USD"),
        "partially_refunded",
    )
    await publish(config, PAYMENT_REFUNDED.name, payment_id, to_record(orphan))

    async def stalled() -> dict[str, Any] | None:
        status, body = await projector_ready(config)
        return body if status == 503 and "payment_views: stalled partitions" in body["problems"] else None

    body = await eventually(stalled, timeout=config.processing.stall_after_s + 20, what="the projector unready")
    assert any("ProjectionNotReady" in why for why in body["retrying"]["payment_views"].values())
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{config.projector.metrics_port}/metrics"
        async with http.get(url) as response:
            metrics = await response.text()
    ages = [
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "projection_oldest_unprojected_age_seconds"
        and sample.labels["projection"] == "payment_views"
        and sample.labels["topic"] == PAYMENT_REFUNDED.name
    ]
    assert max(ages) >= config.processing.stall_after_s - 1  # behind since the orphan came, at least
    [letter] = await eventually(
        lambda: projector_letters(config, PAYMENT_REFUNDED.name, payment_id),
        timeout=2 * config.processing.stall_after_s + 20,
        what="the orphan dead-lettered once its patience ran out",
    )
    assert letter["error_type"] == "ProjectionNotReady"

    async def ready_again() -> bool:
        return (await projector_ready(config))[0] == 200

    await eventually(ready_again, what="the projector ready again")


async def test_already_projected_events_fed_again_change_nothing(
    config: Config, wallet_api: Api, db: asyncpg.Connection, supervisor: Supervisor
) -> None:
    wallet_id = await open_wallet(wallet_api, 3_000)
    path = f"/api/v1/wallet/{wallet_id}/movement"
    for amount in (500, 700):
        assert (await wallet_api.post(path, {"type": "expense", "amount": amount, "currency": "USD"}))[0] == 201
    await projected_balance(db, wallet_id, 1_800, version=3)
    before = await _wallet_rows(db, wallet_id)

    # 1. Every stored offset of the wallet projection forgotten: the projector reads the whole log again.
    supervisor.stop("projector")
    await db.execute("DELETE FROM projection_offsets WHERE projection = 'wallet_views'")
    ensure_running(config, supervisor, "projector")
    ends = await end_offsets(config, WALLET_BALANCE_UPDATE.name, "wallet.movement_updates")

    async def caught_up() -> bool:
        rows = await db.fetch(
            "SELECT topic, partition, last_offset FROM projection_offsets WHERE projection = $1", "wallet_views"
        )
        reached = {(r["topic"], r["partition"]): r["last_offset"] + 1 for r in rows}
        return all(reached.get((tp.topic, tp.partition), 0) >= end for tp, end in ends.items() if end > 0)

    await eventually(caught_up, timeout=60, what="the projector to re-read the whole log")
    assert await _wallet_rows(db, wallet_id) == before

    # 2. The wallet's first balance update delivered again, long after newer ones: the balance
    #    never goes backwards. (The very same event: a forged one with other figures would be a
    #    second decision of version 1 on the log, which the fault suite rightly refuses.)
    [first] = [e for e in await events_for_key(config, WALLET_BALANCE_UPDATE.name, wallet_id) if e["version"] == 1]
    assert first["balance"]["amount"] != 1_800
    await publish(config, WALLET_BALANCE_UPDATE.name, wallet_id, first)
    ends = await end_offsets(config, WALLET_BALANCE_UPDATE.name)
    await eventually(caught_up, timeout=30, what="the projector past the stale update")
    assert await _wallet_rows(db, wallet_id) == before


async def test_offsets_at_or_below_the_stored_one_apply_nothing(config: Config, db: asyncpg.Connection) -> None:
    """The projection's own guard, without relying on the appliers being idempotent: an offset
    already applied is skipped even when the event there now says something else."""
    projection = Projection(f"replay-check-{uuid.uuid4()}", ("replay.check",), WALLET_VIEWS)
    wallet_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())

    def balance(amount: int, version: int) -> dict[str, Any]:
        return command_record(
            "BalanceUpdated",
            new_meta(),
            wallet_id=wallet_id,
            user_id=user_id,
            balance={"amount": amount, "currency": "USD"},
            version=version,
            movement_id=None,
        )

    try:
        assert await projection.apply_batch(db, "replay.check", 0, [(10, balance(100, 5))]) == 1
        # Offset 10 again, now claiming a newer version: applied nothing, the row stays.
        assert await projection.apply_batch(db, "replay.check", 0, [(9, balance(7, 9)), (10, balance(999, 6))]) == 0
        assert await db.fetchval("SELECT balance FROM wallets WHERE id = $1", wallet_id) == 100
    finally:
        await db.execute("DELETE FROM wallets WHERE id = $1", wallet_id)
        await db.execute("DELETE FROM projection_offsets WHERE projection = $1", projection.name)


async def _wallet_rows(db: asyncpg.Connection, wallet_id: str) -> tuple[Any, ...]:
    wallet = await db.fetchrow("SELECT balance, version, last_event_id FROM wallets WHERE id = $1", wallet_id)
    movements = await db.fetch("SELECT * FROM wallet_movements WHERE wallet_id = $1 ORDER BY id", wallet_id)
    return tuple(wallet), tuple(tuple(m) for m in movements)
