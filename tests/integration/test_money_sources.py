"""Money enters the books only from a named, allowed source, on the real log.

Forged commands (an opening of 10^12, an income of 777, a "refund" of a payment that never
paid) written straight to `wallet.movement_required` are refused with their reason and move
nothing; a wallet holding money is opened only by an operator or admin; an applied income
without a source planted on `wallet.movement_updates` is reported by the money auditor."""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer

from connectors.auth import issue_token
from connectors.config import Config
from connectors.topics import WALLET_BALANCE_UPDATE, WALLET_MOVEMENT_REQUIRED, WALLET_MOVEMENT_UPDATES
from domain.access import Principal
from domain.events import EventMeta
from domain.money import Money
from domain.wallet import BalanceUpdated, MovementUpdated
from streams.envelope import command_record, new_meta, to_record
from tests.integration.conftest import MoneyWitness
from tests.integration.kafka_helpers import codec, events_for_key, publish
from tests.integration.test_payment_service import new_wallet, wallet_balance
from tests.support import Api, eventually
from tests.support.actors import TEST_OPERATOR, payer
from tests.support.audit import auditor_get
from tests.support.kafka import admin


def opening(wallet_id: str, user_id: str, balance: int, actor: Principal | None) -> dict[str, Any]:
    return command_record(
        "WalletOpenRequested",
        new_meta(actor=actor),
        wallet_id=wallet_id,
        user_id=user_id,
        currency="USD",
        opening_balance=balance,
    )


def income(wallet_id: str, amount: int, actor: Principal | None, payment_id: str | None = None) -> dict[str, Any]:
    return command_record(
        "MovementRequired",
        new_meta(actor=actor),
        movement_id=str(uuid.uuid4()),
        wallet_id=wallet_id,
        type="income",
        amount={"amount": amount, "currency": "USD"},
        reference="forged",
        description=None,
        reverts_movement_id=None,
        payment_id=payment_id,
    )


async def outcome(config: Config, wallet_id: str, event_type: str, field: str, value: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        events = await events_for_key(config, WALLET_MOVEMENT_UPDATES.name, wallet_id)
        return next((e for e in events if e["envelope"]["event_type"] == event_type and e[field] == value), None)

    return await eventually(found, what=f"the wallet's {event_type} for {value}")


async def test_a_forged_opening_of_a_trillion_opens_no_wallet_and_names_why(config: Config, wallet_api: Api) -> None:
    for actor, code in ((None, "actor_missing"), (payer("someone"), "source_not_allowed")):
        wallet_id = str(uuid.uuid4())
        await publish(config, WALLET_MOVEMENT_REQUIRED.name, wallet_id, opening(wallet_id, "someone", 10**12, actor))
        refused = await outcome(config, wallet_id, "WalletOpened", "wallet_id", wallet_id)
        assert (refused["status"], refused["reason_code"]) == ("rejected", code), refused
        events = await events_for_key(config, WALLET_MOVEMENT_UPDATES.name, wallet_id)
        assert [e["envelope"]["event_type"] for e in events] == ["WalletOpened"]  # no income, no balance
        status, body = await wallet_api.get(f"/api/v1/wallet/{wallet_id}")
        assert (status, body["error"]["field"]) == (404, "wallet_id"), body


async def test_forged_incomes_are_refused_with_their_reason_and_change_no_balance(
    config: Config, wallet_api: Api
) -> None:
    wallet_id, user_id = await new_wallet(wallet_api, 1_000)
    forged = {
        "actor_missing": income(wallet_id, 777, None),
        "actor_not_allowed": income(wallet_id, 777, payer(user_id)),  # a user, outside a payment
        "source_not_allowed": income(wallet_id, 777, payer(user_id), payment_id=str(uuid.uuid4())),
        "not_backed_by_payment": income(wallet_id, 777, TEST_OPERATOR, payment_id=str(uuid.uuid4())),
    }
    await publish(config, WALLET_MOVEMENT_REQUIRED.name, wallet_id, *forged.values())
    for code, command in forged.items():
        refused = await outcome(config, wallet_id, "MovementUpdated", "movement_id", command["movement_id"])
        assert (refused["status"], refused["reason_code"]) == ("rejected", code), refused
        assert refused["reason"]
    honest = income(wallet_id, 5, TEST_OPERATOR)
    await publish(config, WALLET_MOVEMENT_REQUIRED.name, wallet_id, honest)
    applied = await outcome(config, wallet_id, "MovementUpdated", "movement_id", honest["movement_id"])
    assert (applied["status"], applied["source"], applied["envelope"]["actor_subject"]) == (
        "applied",
        "operator_movement",
        TEST_OPERATOR.subject,
    )
    assert await wallet_balance(wallet_api, wallet_id, 1_005) == 1_005  # none of the 4 x 777 arrived


async def test_only_an_operator_or_admin_opens_a_wallet_holding_money_through_the_api(
    config: Config, wallet_api: Api
) -> None:
    user_id = str(uuid.uuid4())
    as_user = wallet_api.as_(issue_token(config.auth, user_id, ["user"]))
    status, body = await as_user.post("/api/v1/wallets", {"user_id": user_id, "currency": "USD", "opening_balance": 1})
    assert (status, body["error"]["field"]) == (403, "opening_balance"), body
    as_operator = wallet_api.as_(issue_token(config.auth, "ops-1", ["operator"]))
    status, body = await as_operator.post(
        "/api/v1/wallets", {"user_id": user_id, "currency": "USD", "opening_balance": 2_500}
    )
    assert status == 201 and body["balance"] == 2_500, body
    await wallet_balance(wallet_api, body["id"], 2_500)
    deposit = await outcome(config, body["id"], "MovementUpdated", "wallet_id", body["id"])
    assert (deposit["source"], deposit["envelope"]["actor_subject"]) == ("opening", "ops-1")
    status, empty = await as_user.post("/api/v1/wallets", {"user_id": user_id, "currency": "EUR"})
    assert status == 201 and empty["balance"] == 0, empty


async def test_an_applied_income_with_no_source_planted_on_the_log_is_reported(
    config: Config, money_witness: MoneyWitness, wallet_api: Api
) -> None:
    wallet_id, user_id = await new_wallet(wallet_api, 0)
    money_witness.planted.add(wallet_id)
    movement_id, now = str(uuid.uuid4()), int(time.time() * 1000)
    # As a forged wallet worker would write it: no actor, no source. A matching balance update keeps
    # the wallet's chain whole, so only the money's missing source is wrong (and the fault suite's
    # own checks of this wallet still hold).
    planted = MovementUpdated(
        EventMeta(str(uuid.uuid4()), now, movement_id, None),
        movement_id,
        wallet_id,
        "income",
        Money(777, "USD"),
        "applied",
        None,
        None,
        777,
        1,
        None,
        "planted",
        None,
        None,
    )
    balance = BalanceUpdated(
        EventMeta(str(uuid.uuid4()), now, movement_id, None), wallet_id, user_id, Money(777, "USD"), 1, movement_id
    )
    # Written past the wallet worker, as only a holder of the admin credential could.
    producer = AIOKafkaProducer(**admin(config).aiokafka(), acks="all")
    await producer.start()
    try:
        key = wallet_id.encode()
        sent = await producer.send_and_wait(WALLET_MOVEMENT_UPDATES.name, codec.encode(to_record(planted)), key=key)
        await producer.send_and_wait(WALLET_BALANCE_UPDATE.name, codec.encode(to_record(balance)), key=key)
    finally:
        await producer.stop()
    where = {"topic": WALLET_MOVEMENT_UPDATES.name, "partition": sent.partition, "offset": sent.offset}

    async def reported() -> list[dict[str, Any]] | None:
        found = [v for v in await auditor_get(config, "/violations") if v["subject"] == wallet_id]
        return found or None

    found = await eventually(reported, timeout=15, what="the auditor to report money from nowhere")
    assert [(v["invariant"], v["at"], v["cleared"]) for v in found] == [("money_has_a_source", where, False)], found
    assert "777" in found[0]["message"] and "names source none" in found[0]["message"]
    entered = await auditor_get(config, "/money-sources")
    assert any(row["source"] == row["actor"] == "(none)" and row["amount"] >= 777 for row in entered), entered
