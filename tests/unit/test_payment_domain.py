"""The payment aggregate as given events / when a command / then events. Pure, no I/O."""

from __future__ import annotations

from domain import payment as p
from domain.events import EventMeta
from domain.ids import derive_id
from domain.money import Money

PID = "11111111-1111-4111-8111-111111111111"
NOW = 1_700_000_000_000


def meta(name: str) -> EventMeta:
    return EventMeta(derive_id("test", name), NOW, PID, None)


def created(method: str = "wallet", amount: int = 5_000, deadline_at: int | None = None) -> p.PaymentCreated:
    wallet = method == "wallet"
    return p.PaymentCreated(
        meta("created"),
        PID,
        "u1",
        Money(amount, "USD"),
        method,  # type: ignore[arg-type]
        "w1" if wallet else None,
        None if wallet else "simulator",
        None if wallet else "tok_success",
        None,
        deadline_at,
    )


def op(
    op_id: str,
    status: str = "succeeded",
    kind: str = "charge",
    source: str = "wallet",
    amount: int = 5_000,
    code: str | None = None,
    reference: str | None = "ref",
) -> p.PaymentOperationCompleted:
    return p.PaymentOperationCompleted(
        meta(op_id + status),
        PID,
        op_id,
        kind,
        status,
        Money(amount, "USD"),
        source,  # type: ignore[arg-type]
        reference,
        code,
        code,
    )


def given(*events: object) -> p.Payment | None:
    state: p.Payment | None = None
    for event in events:
        if isinstance(event, p.PaymentCreated):
            decision = p.decide_created(state, event, NOW)
        elif isinstance(event, p.RefundRequested):
            decision = p.decide_refund(state, event)
        else:
            assert isinstance(event, p.PaymentOperationCompleted)
            decision = p.decide_operation(state, event, NOW)
        state = decision.payment or state
    return state


DEBIT = p.charge_operation_id(PID, "wallet")
CHARGE = p.charge_operation_id(PID, "external")


def test_a_wallet_payment_asks_the_wallet_for_a_debit_named_after_the_payment() -> None:
    decision = p.decide_created(None, created(), NOW)
    assert decision.payment is not None and decision.payment.status == "processing"
    assert decision.effects == (p.WalletMovement(DEBIT, "w1", "expense", Money(5_000, "USD"), PID, None, None),)


def test_a_redelivered_creation_asks_for_the_same_debit_and_changes_nothing() -> None:
    decision = p.decide_created(given(created()), created(), NOW + 5)
    assert decision.payment is None and decision.effects[0].movement_id == DEBIT  # type: ignore[union-attr]
    assert p.decide_created(given(created(), op(DEBIT)), created(), NOW).effects == ()


def test_a_non_positive_amount_fails_the_payment_at_once() -> None:
    decision = p.decide_created(None, created(amount=0), NOW)
    assert decision.effects == () and isinstance(decision.events[0], p.PaymentFailed)
    assert decision.events[0].reason_code == "invalid_amount"


def test_the_debit_succeeding_completes_the_payment_once() -> None:
    state = given(created())
    first = p.decide_operation(state, op(DEBIT), NOW)
    assert first.payment is not None and first.payment.status == "completed"
    assert [type(e) for e in first.events] == [p.PaymentSucceeded]
    again = p.decide_operation(first.payment, op(DEBIT), NOW + 99)
    assert again.payment is None and again.events == first.events  # same ids and timestamps


def test_insufficient_funds_fails_the_payment_with_the_reason() -> None:
    decision = p.decide_operation(given(created()), op(DEBIT, "failed", code="insufficient_funds"), NOW)
    assert decision.payment is not None and decision.payment.status == "failed"
    failed = decision.events[0]
    assert isinstance(failed, p.PaymentFailed) and failed.reason_code == "insufficient_funds"


def test_past_the_deadline_the_payment_fails_and_a_late_success_is_inconsistent() -> None:
    state = given(created("external", deadline_at=NOW + 10))
    assert state is not None and p.overdue(state, NOW) is None
    deadline = p.overdue(state, NOW + 10)
    assert deadline is not None and deadline.source == "deadline"
    failed = given(created("external", deadline_at=NOW + 10), deadline)
    assert failed is not None and failed.status == "failed" and failed.reason_code == "provider_timeout"
    assert p.overdue(failed, NOW + 20) is None
    late = p.decide_operation(failed, op(CHARGE, source="provider", reference="ch_1"), NOW)
    inconsistent = late.events[0]
    assert isinstance(inconsistent, p.PaymentOperationInconsistent) and inconsistent.payment_status == "failed"
    assert late.payment is not None
    compensation = p.decide_compensation(late.payment, inconsistent)
    assert compensation.effects == (
        p.ProviderRefund(p.compensation_operation_id(PID), PID, "simulator", "ch_1", Money(5_000, "USD")),
    )


def test_a_late_failure_after_the_deadline_changes_nothing() -> None:
    deadline_op = op(p.deadline_operation_id(PID), "failed", source="deadline")
    state = given(created("external", deadline_at=NOW), deadline_op)
    decision = p.decide_operation(state, op(CHARGE, "failed", source="provider"), NOW)
    assert decision.events == () and decision.payment is not None and decision.payment.status == "failed"


def test_duplicate_provider_updates_are_one_operation() -> None:
    first = p.operation_from_provider(
        meta("e1"), PID, "simulator", "ch_1", CHARGE, "charge", "succeeded", Money(5_000, "USD"), None
    )
    second = p.operation_from_provider(
        meta("e2"), PID, "simulator", "ch_1", CHARGE, "charge", "succeeded", Money(5_000, "USD"), None
    )
    assert first is not None and second is not None and first.operation_id == second.operation_id == CHARGE
    state = given(created("external"), first)
    assert p.decide_operation(state, second, NOW).payment is None
    assert (
        p.operation_from_provider(
            meta("e3"), PID, "simulator", "ch_1", CHARGE, "charge", "pending", Money(5_000, "USD"), None
        )
        is None
    )


def refund(refund_id: str, amount: int) -> p.RefundRequested:
    return p.RefundRequested(meta(refund_id), PID, refund_id, Money(amount, "USD"), None)


def test_a_full_wallet_refund_reverts_the_debit_and_a_second_is_refused() -> None:
    state = given(created(), op(DEBIT))
    decision = p.decide_refund(state, refund("r1", 5_000))
    movement = decision.effects[0]
    assert isinstance(movement, p.WalletMovement) and movement.reverts_movement_id == DEBIT
    assert movement.type == "income" and movement.movement_id == p.refund_operation_id("r1")
    assert p.decide_refund(decision.payment, refund("r2", 1)).rejection is not None
    done = p.decide_operation(decision.payment, op(movement.movement_id, kind="refund"), NOW)
    assert done.payment is not None and done.payment.status == "refunded"
    assert isinstance(done.events[0], p.PaymentRefunded) and done.events[0].refunded_total.amount == 5_000
    assert p.decide_refund(done.payment, refund("r3", 1)).rejection == ("not_refundable", "payment is refunded")


def test_partial_refunds_add_up_and_never_exceed_the_payment() -> None:
    state = given(created(), op(DEBIT), refund("r1", 2_000), op(p.refund_operation_id("r1"), kind="refund"))
    assert state is not None and state.status == "partially_refunded" and state.refunded == 2_000
    assert p.decide_refund(state, refund("r2", 3_001)).rejection is not None
    last = p.decide_refund(state, refund("r2", 3_000))
    assert isinstance(last.effects[0], p.WalletMovement) and last.effects[0].reverts_movement_id is None


def test_a_refund_before_completion_is_refused() -> None:
    assert p.decide_refund(given(created()), refund("r1", 1)).rejection is not None


def test_state_survives_the_table_round_trip() -> None:
    state = given(created(), op(DEBIT), refund("r1", 2_000))
    assert state is not None and p.from_dict(p.to_dict(state)) == state
