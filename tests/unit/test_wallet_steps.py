"""The wallet's saga step with fakes for its tables and sender: no faust, no broker."""

from __future__ import annotations

import dataclasses
import uuid

from connectors.topics import WALLET_BALANCE_UPDATE, WALLET_MOVEMENT_UPDATES, WALLET_PAYMENT_OPERATIONS
from domain.access import Principal
from domain.money import Money
from streams.envelope import command_record, new_meta
from streams.wallet_steps import WalletSteps
from tests.support.fakes import FakeDurable, FakeSender, FakeTable, Journal

NOW = 1_700_000_000_000
OPERATOR = Principal("dev-operator", frozenset({"operator"}))
SETUP = Principal("setup", frozenset({"admin"}))


def build() -> tuple[WalletSteps, Journal, FakeSender, FakeDurable]:
    journal = Journal()
    send, durable = FakeSender(journal), FakeDurable(journal)
    steps = WalletSteps(FakeTable(journal, "wallets"), FakeTable(journal, "movements"), send, durable, lambda: NOW)
    return steps, journal, send, durable


def open_command(wallet_id: str, balance: int) -> dict:
    return command_record(
        "WalletOpenRequested",
        new_meta(actor=SETUP),
        wallet_id=wallet_id,
        user_id=str(uuid.uuid4()),
        currency="USD",
        opening_balance=balance,
    )


def expense(wallet_id: str, amount: int, actor: Principal | None = OPERATOR, payment_id: str | None = None) -> dict:
    return command_record(
        "MovementRequired",
        new_meta(actor=actor),
        movement_id=str(uuid.uuid4()),
        wallet_id=wallet_id,
        type="expense",
        amount=Money(amount, "USD"),
        reference="test",
        description=None,
        reverts_movement_id=None,
        payment_id=payment_id,
    )


async def test_a_movement_is_recorded_and_durable_before_its_outcome_is_published() -> None:
    steps, journal, send, _ = build()
    wallet_id = str(uuid.uuid4())
    await steps.process_movement(open_command(wallet_id, 1_000))
    journal.entries.clear()
    send.sent.clear()

    await steps.process_movement(expense(wallet_id, 300))

    assert steps.wallets[wallet_id]["balance"] == 700
    first_send = journal.kinds().index("send")
    assert journal.kinds()[:first_send] == ["write movements", "write wallets", "durable"]
    [updated] = send.on(WALLET_MOVEMENT_UPDATES.name)
    assert updated["status"] == "applied" and updated["balance_after"] == 700
    [balance] = send.on(WALLET_BALANCE_UPDATE.name)
    assert balance["balance"]["amount"] == 700
    # The outcome acts for whoever gave the command, keyed by the wallet.
    assert updated["envelope"]["actor_subject"] == OPERATOR.subject
    assert all(key == wallet_id.encode() for _, key, _ in send.sent)


async def test_a_redelivered_command_re_emits_the_same_outcome_and_moves_no_money_twice() -> None:
    steps, journal, send, _ = build()
    wallet_id = str(uuid.uuid4())
    await steps.process_movement(open_command(wallet_id, 1_000))
    command = expense(wallet_id, 300)
    before = len(send.sent)
    await steps.process_movement(command)
    first = send.sent[before:]
    rows = (dict(steps.wallets[wallet_id]), dict(steps.movements[command["movement_id"]]))
    redelivered_at = len(journal.entries)

    await steps.process_movement(command)

    assert steps.wallets[wallet_id]["balance"] == 700
    assert first and send.sent[before + len(first) :] == first  # byte for byte: same ids, same times
    # The same rows written again, made durable, then the outcome: a local store that was ahead of
    # its changelog when the worker died brings the changelog level with it.
    assert (steps.wallets[wallet_id], steps.movements[command["movement_id"]]) == rows
    kinds = journal.kinds()[redelivered_at:]
    assert kinds[: kinds.index("send")] == ["write movements", "write wallets", "durable"]


async def test_an_expense_beyond_the_balance_is_rejected_and_changes_no_balance() -> None:
    steps, _, send, _ = build()
    wallet_id = str(uuid.uuid4())
    await steps.process_movement(open_command(wallet_id, 100))

    await steps.process_movement(expense(wallet_id, 300))

    assert steps.wallets[wallet_id]["balance"] == 100
    rejected = send.on(WALLET_MOVEMENT_UPDATES.name)[-1]
    assert rejected["status"] == "rejected" and rejected["reason_code"] == "insufficient_funds"


async def test_rows_hold_the_records_fields_as_asdict_would_write_them() -> None:
    steps, _, _, _ = build()
    wallet_id = str(uuid.uuid4())
    await steps.process_movement(open_command(wallet_id, 1_000))
    command = expense(wallet_id, 300)
    await steps.process_movement(command)

    movement = steps.load_movement(command["movement_id"])
    wallet = steps.load_wallet(wallet_id)
    assert movement is not None and wallet is not None
    assert steps.movements.get(command["movement_id"]) == dataclasses.asdict(movement)
    assert steps.wallets.get(wallet_id) == dataclasses.asdict(wallet)
    assert wallet.balance == 700


async def test_a_payments_movement_is_answered_to_the_payment_keyed_by_it_and_again_on_redelivery() -> None:
    steps, _, send, _ = build()
    wallet_id, payment_id = str(uuid.uuid4()), str(uuid.uuid4())
    await steps.process_movement(open_command(wallet_id, 100))
    paid, refused = expense(wallet_id, 60, payment_id=payment_id), expense(wallet_id, 60, payment_id=payment_id)

    await steps.process_movement(paid)
    await steps.process_movement(refused)
    await steps.process_movement(paid)  # redelivered

    answers = [(key, op) for topic, key, op in send.sent if topic == WALLET_PAYMENT_OPERATIONS.name]
    assert [key for key, _ in answers] == [payment_id.encode()] * 3
    first, second, again = (op for _, op in answers)
    assert (first["operation_id"], first["status"], first["source"]) == (paid["movement_id"], "succeeded", "wallet")
    assert first["amount"] == {"amount": 60, "currency": "USD"} and first["kind"] == "charge"
    assert (second["status"], second["failure_code"]) == ("failed", "insufficient_funds")
    assert again == first  # the same operation id, so the payment applies it once
    updated = next(e for e in send.on(WALLET_MOVEMENT_UPDATES.name) if e.get("movement_id") == paid["movement_id"])
    assert first["envelope"]["causation_id"] == updated["envelope"]["event_id"]


async def test_a_movement_outside_a_payment_answers_no_payment() -> None:
    steps, _, send, _ = build()
    wallet_id = str(uuid.uuid4())
    await steps.process_movement(open_command(wallet_id, 100))

    await steps.process_movement(expense(wallet_id, 60))

    assert send.on(WALLET_PAYMENT_OPERATIONS.name) == []
    assert len(send.on(WALLET_MOVEMENT_UPDATES.name)) == 3  # opened, its income, the expense
