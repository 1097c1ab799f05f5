"""The provider's references on the operations: its pending answer is an event under the
operation id it was sent, the payment keeps the reference, a passed deadline still names it, and
`payments trace` says what a payment waiting on the provider waits for, and until when."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from connectors import projections
from connectors.provider_client import ProviderAnswer
from connectors.topics import PAYMENT_OPERATION_COMPLETED
from console.entries import Entry, details, summary_json, timeline, verdict
from domain import payment as domain
from domain.events import EventMeta
from domain.ids import derive_id
from domain.money import Money
from streams.envelope import to_record
from tests.unit.test_payment_steps import NOW, build, created

DEADLINE = NOW + 4_000


class AnsweringProvider:
    """Accepts every charge and refund and answers pending, as the simulator does."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    async def charge(self, idempotency_key: str, payment_id: str, amount: int, currency: str, token: str) -> Any:
        self.keys.append(idempotency_key)
        return ProviderAnswer("ch_123", "pending", amount, currency, idempotency_key)

    async def refund(self, idempotency_key: str, payment_id: str, charge: str, amount: int, currency: str) -> Any:
        self.keys.append(idempotency_key)
        return ProviderAnswer("re_456", "pending", amount, currency, idempotency_key)


def external_waiting() -> domain.RequestPayment:
    return dataclasses.replace(created("external"), deadline_at=DEADLINE)


async def test_the_pending_answer_is_an_event_under_the_operation_id_sent_and_the_payment_keeps_it() -> None:
    provider = AnsweringProvider()
    steps, _, send = build(provider)
    event = external_waiting()

    await steps.process_payment_method(to_record(event))

    [pending] = send.on(PAYMENT_OPERATION_COMPLETED.name)
    assert pending["envelope"]["event_type"] == "PaymentOperationPending"
    assert pending["operation_id"] == provider.keys[0] == domain.charge_operation_id(event.payment_id, "external")
    assert (pending["reference"], pending["provider_status"], pending["deadline_at"]) == ("ch_123", "pending", DEADLINE)
    assert steps.payments[event.payment_id]["charge_reference"] is None, "kept when the event comes back"

    await steps.process_payment_operation_result(pending)
    assert steps.payments[event.payment_id]["charge_reference"] == "ch_123"
    assert steps.payments[event.payment_id]["status"] == "processing", "a pending answer decides nothing"


async def test_a_redelivered_creation_gives_the_same_pending_event_and_changes_nothing() -> None:
    steps, _, send = build(AnsweringProvider())
    event = external_waiting()
    await steps.process_payment_method(to_record(event))
    await steps.process_payment_operation_result(send.on(PAYMENT_OPERATION_COMPLETED.name)[0])
    row = dict(steps.payments[event.payment_id])

    await steps.process_payment_method(to_record(event))
    await steps.process_payment_operation_result(send.on(PAYMENT_OPERATION_COMPLETED.name)[1])

    first, again = send.on(PAYMENT_OPERATION_COMPLETED.name)
    assert again["envelope"]["event_id"] == first["envelope"]["event_id"]
    assert steps.payments[event.payment_id] == row


async def test_the_deadline_fails_the_payment_naming_the_providers_charge() -> None:
    steps, _, send = build(AnsweringProvider())
    event = external_waiting()
    await steps.process_payment_method(to_record(event))
    await steps.process_payment_operation_result(send.on(PAYMENT_OPERATION_COMPLETED.name)[0])

    steps.now = lambda: DEADLINE + 1
    await steps.enforce_deadlines(False, 0.0)
    [_, timed_out] = send.on(PAYMENT_OPERATION_COMPLETED.name)
    await steps.process_payment_operation_result(timed_out)

    assert (timed_out["source"], timed_out["reference"]) == ("deadline", "ch_123")
    [failed] = send.on("payment.failed")
    assert failed["reason_code"] == "provider_timeout" and failed["operation"]["reference"] == "ch_123"


def test_a_refunds_pending_answer_is_kept_and_its_deadline_names_it() -> None:
    payment = domain.Payment(
        "p-1", "u-1", 5_000, "USD", "external", None, "simulator", "tok", None, None, "completed", NOW, "p-1",
        domain.charge_operation_id("p-1", "external"), charge_reference="ch_123",
    )  # fmt: skip
    refund = domain.Refund("r-1", domain.refund_operation_id("r-1"), 1_000, "pending", None, deadline_at=DEADLINE)
    payment = dataclasses.replace(payment, refunds={"r-1": refund})
    effect = domain.ProviderRefund(refund.operation_id, "p-1", "simulator", "ch_123", Money(1_000, "USD"), DEADLINE)
    pending = domain.accepted_by_provider(effect, "re_456", "pending", NOW)

    kept = domain.decide_pending(payment, pending).payment
    assert kept is not None and kept.refunds["r-1"].reference == "re_456" and kept.charge_reference == "ch_123"
    assert domain.decide_pending(kept, pending).payment is None, "once known, nothing to write"
    [timed_out] = domain.overdue_operations(kept, DEADLINE)
    assert (timed_out.kind, timed_out.reference, timed_out.failure_code) == ("refund", "re_456", "provider_timeout")


def test_an_outcome_that_came_first_keeps_its_reference() -> None:
    payment = domain.Payment(
        "p-1", "u-1", 5_000, "USD", "external", None, "simulator", "tok", None, DEADLINE, "completed", NOW, "p-1",
        domain.charge_operation_id("p-1", "external"), charge_reference="pi_from_webhook",
    )  # fmt: skip
    effect = domain.ProviderCharge(payment.charge_operation_id, "p-1", "simulator", "tok", payment.money)
    assert (
        domain.decide_pending(payment, domain.accepted_by_provider(effect, "pi_other", "pending", NOW)).payment is None
    )


# ---------------------------------------------------------------- payments trace


def log_entry(topic: str, offset: int, at: int, event_type: str, **fields: Any) -> Entry:
    envelope = {"event_type": event_type, "occurred_at": at, "correlation_id": "p-1"}
    return Entry(topic, 0, offset, at, "p-1", b"", {"envelope": envelope, "payment_id": "p-1", **fields})


def waiting_flow() -> list[Entry]:
    return timeline(
        [
            log_entry("payment.created", 0, NOW, "PaymentCreated", deadline_at=DEADLINE, provider="simulator"),
            log_entry(
                PAYMENT_OPERATION_COMPLETED.name, 0, NOW + 40, "PaymentOperationPending",
                operation_id="op-1", kind="charge", provider="simulator", reference="ch_123",
                provider_status="pending", deadline_at=DEADLINE,
            ),
        ]
    )  # fmt: skip


def test_trace_says_a_payment_waits_for_the_providers_webhook_until_its_deadline() -> None:
    terminal, sentence = verdict(waiting_flow(), NOW + 1_000)
    assert not terminal
    assert sentence == (
        "waiting for the provider's webhook until 2023-11-14 22:13:24.000Z: "
        "charge ch_123 at simulator (operation op-1, pending)"
    )
    assert "passed" in verdict(waiting_flow(), DEADLINE + 2_500)[1]
    assert "2.500 s ago and the payment worker has not failed it yet" in verdict(waiting_flow(), DEADLINE + 2_500)[1]
    summary = json.loads(summary_json("p-1", waiting_flow()))["summary"]
    assert summary["waiting_on_provider"]["reference"] == "ch_123"


def test_trace_lines_show_the_reference_and_the_deadline() -> None:
    created_entry, pending = waiting_flow()
    assert details(created_entry)["deadline_at"] == "2023-11-14 22:13:24.000Z"
    assert {k: details(pending)[k] for k in ("operation_id", "reference")} == {
        "operation_id": "op-1",
        "reference": "ch_123",
    }


def test_an_outcome_of_the_operation_ends_the_wait_and_no_answer_at_all_names_the_deadline() -> None:
    decided = [
        *waiting_flow(),
        log_entry(PAYMENT_OPERATION_COMPLETED.name, 1, NOW + 500, "PaymentOperationCompleted", operation_id="op-1"),
    ]
    assert verdict(timeline(decided), NOW + 1_000)[1].startswith("stopped after PaymentOperationCompleted")
    no_answer = verdict(waiting_flow()[:1], NOW + 1_000)[1]
    assert no_answer == (
        "stopped after PaymentCreated on payment.created, not terminal; "
        "no answer from the provider recorded, deadline 2023-11-14 22:13:24.000Z"
    )


# ---------------------------------------------------------------- the views


class Recorded:
    """Stands in for the projector's connection: the statements an applier runs."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    async def execute(self, query: str, *args: Any) -> None:
        self.statements.append((query, args))


async def test_a_terminal_event_writes_its_deciding_operation_as_the_operations_own_event_would() -> None:
    op = domain.PaymentOperationCompleted(
        EventMeta(derive_id("PaymentOperationCompleted", "op-1"), NOW, "p-1", None),
        "p-1", "op-1", "charge", "succeeded", Money(5_000, "USD"), "provider", "ch_123", None, None,
    )  # fmt: skip
    succeeded = domain.PaymentSucceeded(
        EventMeta("e-2", NOW + 7, "p-1", None),
        "p-1", "u-1", Money(5_000, "USD"), "external", domain.OperationSummary.of(op),
    )  # fmt: skip
    from_op, from_terminal = Recorded(), Recorded()

    await projections.apply_operation_completed(from_op, to_record(op))  # type: ignore[arg-type]
    await projections.apply_payment_succeeded(from_terminal, to_record(succeeded))  # type: ignore[arg-type]

    assert from_terminal.statements[-1] == from_op.statements[0], "the same row, whichever is projected first"
