"""The payment saga's steps with fakes for the table, the sender and the provider: no faust, no broker."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from connectors.provider_client import ProviderRejected
from connectors.topics import PAYMENT_OPERATION_COMPLETED, PAYMENT_SUCCEEDED, WALLET_MOVEMENT_REQUIRED
from domain import payment as domain
from domain.events import EventMeta
from domain.money import Money
from streams.envelope import to_record
from streams.payment_deadlines import DeadlineIndex
from streams.payment_steps import PaymentSteps, UnprocessableEvent
from tests.support.fakes import FakeDurable, FakeSender, FakeTable, Journal

NOW = 1_700_000_000_000
PAYER = ("payer-subject", ("user",))


class RefusingProvider:
    def __init__(self, decline_code: str | None = None) -> None:
        self.charges: list[str] = []
        self.decline_code = decline_code

    async def charge(self, idempotency_key: str, payment_id: str, amount: int, currency: str, token: str) -> Any:
        self.charges.append(idempotency_key)
        raise ProviderRejected(402, {"error": "card declined"}, self.decline_code)

    async def refund(self, idempotency_key: str, payment_id: str, charge: str, amount: int, currency: str) -> Any:
        raise AssertionError("no refund expected")


def build(provider: Any = None, providers: dict[str, Any] | None = None) -> tuple[PaymentSteps, Journal, FakeSender]:
    journal = Journal()
    send = FakeSender(journal)
    steps = PaymentSteps(
        FakeTable(journal, "payments"),
        send,
        FakeDurable(journal),
        providers if providers is not None else {"simulator": provider or RefusingProvider()},
        60_000,
        DeadlineIndex(FakeTable(journal, "open_payments")),
        now=lambda: NOW,
    )
    return steps, journal, send


def created(method: str = "wallet", provider_name: str = "simulator") -> domain.RequestPayment:
    payment_id = str(uuid.uuid4())
    meta = EventMeta(str(uuid.uuid4()), NOW, payment_id, None, *PAYER)
    wallet = str(uuid.uuid4()) if method == "wallet" else None
    provider, token = (provider_name, "tok_visa") if method == "external" else (None, None)
    return domain.RequestPayment(
        meta, payment_id, str(uuid.uuid4()), Money(5_000, "USD"), method, wallet, provider, token, "test", None
    )


def debit_applied(event: domain.RequestPayment) -> domain.PaymentOperationCompleted:
    """The wallet's outcome of the payment's debit, carrying no actor: the success that follows is
    stamped by the domain, not looked up."""
    return domain.operation_from_movement(
        EventMeta(str(uuid.uuid4()), NOW, event.payment_id, None),
        event.payment_id,
        domain.charge_operation_id(event.payment_id, "wallet"),
        "expense",
        Money(5_000, "USD"),
        True,
        None,
        None,
    )


async def test_a_wallet_payment_is_stored_and_durable_before_its_debit_is_asked_for() -> None:
    steps, journal, send = build()
    event = created()

    await steps.process_payment_method(to_record(event))

    assert steps.payments[event.payment_id]["status"] == "processing"
    assert journal.kinds() == ["write payments", "durable", "send"]
    [(topic, key, command)] = send.sent
    assert topic == WALLET_MOVEMENT_REQUIRED.name and key == event.wallet_id.encode()
    assert command["movement_id"] == domain.charge_operation_id(event.payment_id, "wallet")
    assert command["amount"] == {"amount": 5_000, "currency": "USD"}
    assert command["envelope"]["actor_subject"] == PAYER[0]


async def test_the_applied_debit_completes_the_payment_acting_for_the_payer() -> None:
    steps, _, send = build()
    event = created()
    await steps.process_payment_method(to_record(event))
    op = debit_applied(event)

    await steps.process_payment_operation_result(to_record(op))

    assert steps.payments[event.payment_id]["status"] == "completed"
    [succeeded] = send.on(PAYMENT_SUCCEEDED.name)
    assert succeeded["payment_id"] == event.payment_id
    assert succeeded["envelope"]["actor_subject"] == PAYER[0]
    assert succeeded["envelope"]["actor_roles"] == list(PAYER[1])


async def test_a_redelivered_operation_re_emits_the_same_success_after_writing_its_state_again() -> None:
    steps, journal, send = build()
    event = created()
    await steps.process_payment_method(to_record(event))
    op = debit_applied(event)
    await steps.process_payment_operation_result(to_record(op))
    row = dict(steps.payments[event.payment_id])
    redelivered_at = len(journal.entries)

    await steps.process_payment_operation_result(to_record(op))

    first, again = send.on(PAYMENT_SUCCEEDED.name)
    assert first == again
    # A local store ahead of its changelog (SIGKILL before the acknowledgement) is brought level.
    assert steps.payments[event.payment_id] == row
    assert journal.kinds()[redelivered_at:] == ["write payments", "durable", "send"]


async def test_a_charge_the_provider_refuses_becomes_its_failed_operation() -> None:
    provider = RefusingProvider()
    steps, _, send = build(provider)
    event = created("external")

    await steps.process_payment_method(to_record(event))

    assert provider.charges == [domain.charge_operation_id(event.payment_id, "external")]
    [failed] = send.on(PAYMENT_OPERATION_COMPLETED.name)
    assert failed["status"] == "failed" and failed["failure_code"] == "provider_rejected"
    assert failed["operation_id"] == provider.charges[0]
    assert failed["envelope"]["actor_subject"] == PAYER[0]


async def test_a_charge_goes_to_the_provider_the_payment_names() -> None:
    simulator, stripe = RefusingProvider(), RefusingProvider("card_declined")
    steps, _, send = build(providers={"simulator": simulator, "stripe": stripe})
    event = created("external", "stripe")

    await steps.process_payment_method(to_record(event))

    assert simulator.charges == [] and len(stripe.charges) == 1
    # A card declined while confirming fails with the provider's code, as its webhook would.
    [failed] = send.on(PAYMENT_OPERATION_COMPLETED.name)
    assert failed["status"] == "failed" and failed["failure_code"] == "card_declined"


async def test_a_charge_to_a_provider_not_offered_waits_for_its_deadline() -> None:
    steps, _, send = build(providers={"simulator": RefusingProvider()})
    event = created("external", "stripe")

    await steps.process_payment_method(to_record(event))

    assert steps.payments[event.payment_id]["status"] == "processing"
    assert send.on(PAYMENT_OPERATION_COMPLETED.name) == []


async def test_only_payments_still_waiting_are_kept_open_and_a_restart_finds_their_deadline_there() -> None:
    steps, _, send = build(providers={"simulator": RefusingProvider()})
    waiting = dataclasses.replace(created("external", "stripe"), deadline_at=NOW + 4_000)
    await steps.process_payment_method(to_record(waiting))
    open_payments = steps.deadlines.open_payments
    assert dict(open_payments.items()) == {waiting.payment_id: NOW + 4_000}

    restarted = DeadlineIndex(open_payments)  # a new process: the index is read from its table
    steps.deadlines, steps.now = restarted, lambda: NOW + 5_000
    await steps.enforce_deadlines(False, 0.0)
    [timed_out] = send.on(PAYMENT_OPERATION_COMPLETED.name)
    await steps.process_payment_operation_result(timed_out)

    assert steps.payments[waiting.payment_id]["status"] == "failed"
    assert dict(open_payments.items()) == {}, "a settled payment leaves the open table"


async def test_an_operation_on_the_wallets_topic_is_applied_only_when_it_comes_from_the_wallet() -> None:
    steps, _, send = build()
    event = created()
    await steps.process_payment_method(to_record(event))
    posing = dataclasses.replace(debit_applied(event), source="provider")

    with pytest.raises(UnprocessableEvent, match="'provider' on the wallet's topic"):
        await steps.process_wallet_operation(to_record(posing))
    assert steps.payments[event.payment_id]["status"] == "processing" and send.on(PAYMENT_SUCCEEDED.name) == []

    await steps.process_wallet_operation(to_record(debit_applied(event)))

    assert steps.payments[event.payment_id]["status"] == "completed" and len(send.on(PAYMENT_SUCCEEDED.name)) == 1
