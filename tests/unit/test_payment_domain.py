"""The payment aggregate as given events / when a command / then events. Pure, no I/O."""

from __future__ import annotations

import dataclasses

from domain import payment as p
from domain.events import EventMeta
from domain.ids import derive_id
from domain.money import Money

PID = "11111111-1111-4111-8111-111111111111"
NOW = 1_700_000_000_000
DEADLINE_MS = 4_000


def meta(name: str) -> EventMeta:
    return EventMeta(derive_id("test", name), NOW, PID, None)


def created(method: str = "wallet", amount: int = 5_000, deadline_at: int | None = None) -> p.RequestPayment:
    wallet = method == "wallet"
    return p.RequestPayment(
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
        if isinstance(event, p.RequestPayment):
            decision = p.decide_created(state, event, NOW)
        elif isinstance(event, p.RefundRequested):
            decision = p.decide_refund(state, event, NOW, DEADLINE_MS)
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


def ask(state: p.Payment | None, request: p.RefundRequested) -> p.Decision:
    return p.decide_refund(state, request, NOW, DEADLINE_MS)


def test_a_full_wallet_refund_reverts_the_debit_and_a_second_is_refused() -> None:
    state = given(created(), op(DEBIT))
    decision = ask(state, refund("r1", 5_000))
    movement = decision.effects[0]
    assert isinstance(movement, p.WalletMovement) and movement.reverts_movement_id == DEBIT
    assert movement.type == "income" and movement.movement_id == p.refund_operation_id("r1")
    assert ask(decision.payment, refund("r2", 1)).rejection is not None
    done = p.decide_operation(decision.payment, op(movement.movement_id, kind="refund"), NOW)
    assert done.payment is not None and done.payment.status == "refunded"
    assert isinstance(done.events[0], p.PaymentRefunded) and done.events[0].refunded_total.amount == 5_000
    assert ask(done.payment, refund("r3", 1)).rejection == ("not_refundable", "payment is refunded")


def test_partial_refunds_add_up_and_never_exceed_the_payment() -> None:
    state = given(
        created(), op(DEBIT), refund("r1", 2_000), op(p.refund_operation_id("r1"), kind="refund", amount=2_000)
    )
    assert state is not None and state.status == "partially_refunded" and state.refunded == 2_000
    assert ask(state, refund("r2", 3_001)).rejection is not None
    last = ask(state, refund("r2", 3_000))
    assert isinstance(last.effects[0], p.WalletMovement) and last.effects[0].reverts_movement_id is None


def test_a_refund_before_completion_is_refused() -> None:
    assert ask(given(created()), refund("r1", 1)).rejection is not None


def test_state_survives_the_table_round_trip() -> None:
    state = given(created(), op(DEBIT), refund("r1", 2_000))
    assert state is not None and p.from_dict(p.to_dict(state)) == state


# ---------------------------------------------------------------- refund outcomes (issue 15)

EXTERNAL_PAID = (created("external"), op(CHARGE, source="provider", reference="ch_1"))


def provider_refund(refund_id: str, status: str = "succeeded", amount: int = 5_000, currency: str = "USD") -> object:
    return p.PaymentOperationCompleted(
        meta(refund_id + status + currency + str(amount)),
        PID,
        p.refund_operation_id(refund_id),
        "refund",
        status,  # type: ignore[arg-type]
        Money(amount, currency),
        "provider",
        "re_" + refund_id,
        None if status == "succeeded" else "expired_or_canceled_card",
        None if status == "succeeded" else "the provider declined the refund: expired_or_canceled_card",
    )


def test_a_declined_refund_fails_with_its_reason_releases_what_it_held_and_a_new_refund_can_take_it() -> None:
    state = given(*EXTERNAL_PAID, refund("r1", 5_000))
    assert state is not None and state.reserved() == 5_000
    declined = p.decide_operation(state, provider_refund("r1", "failed"), NOW)
    assert declined.payment is not None
    assert declined.payment.reserved() == 0 and declined.payment.refunded == 0
    assert declined.payment.status == "completed"
    [failed] = declined.events
    assert isinstance(failed, p.RefundFailed)
    assert (failed.refund_id, failed.amount, failed.reason_code) == (
        "r1",
        Money(5_000, "USD"),
        "expired_or_canceled_card",
    )
    assert failed.meta.event_id == derive_id("RefundFailed", "r1")
    again = p.decide_operation(declined.payment, provider_refund("r1", "failed"), NOW + 50)
    assert again.payment is None and again.events == declined.events  # a redelivery re-emits the same event
    retry = ask(declined.payment, refund("r2", 5_000))
    assert retry.rejection is None and isinstance(retry.effects[0], p.ProviderRefund)


def test_a_wallet_credit_rejected_fails_the_refund_and_a_full_retry_still_reverts_the_debit() -> None:
    state = given(created(), op(DEBIT), refund("r1", 5_000))
    rejected = op(p.refund_operation_id("r1"), "failed", kind="refund", code="actor_not_allowed")
    decision = p.decide_operation(state, rejected, NOW)
    [failed] = decision.events
    assert isinstance(failed, p.RefundFailed) and failed.reason_code == "actor_not_allowed"
    assert decision.payment is not None and decision.payment.reserved() == 0
    retry = ask(decision.payment, refund("r2", 5_000)).effects[0]
    assert isinstance(retry, p.WalletMovement) and retry.reverts_movement_id == DEBIT


def test_a_provider_refund_gets_a_deadline_and_fails_at_it_with_provider_timeout() -> None:
    state = given(*EXTERNAL_PAID, refund("r1", 2_000))
    assert state is not None and state.refunds["r1"].deadline_at == NOW + DEADLINE_MS
    assert state.next_deadline() == NOW + DEADLINE_MS
    request = ask(given(*EXTERNAL_PAID), refund("r1", 2_000)).effects[0]
    assert isinstance(request, p.ProviderRefund) and request.deadline_at == NOW + DEADLINE_MS
    assert p.overdue_operations(state, NOW + DEADLINE_MS - 1) == ()
    [deadline] = p.overdue_operations(state, NOW + DEADLINE_MS)
    assert deadline.operation_id == p.refund_deadline_operation_id("r1") and deadline.source == "deadline"
    timed_out = p.decide_operation(state, deadline, NOW + DEADLINE_MS)
    [failed] = timed_out.events
    assert isinstance(failed, p.RefundFailed) and failed.reason_code == "provider_timeout"
    assert timed_out.payment is not None and timed_out.payment.next_deadline() is None
    assert p.overdue_operations(timed_out.payment, NOW + 99_999) == ()


def test_a_wallet_refund_has_no_deadline() -> None:
    state = given(created(), op(DEBIT), refund("r1", 1_000))
    assert state is not None and state.refunds["r1"].deadline_at is None and state.next_deadline() is None


def test_a_late_refund_success_after_its_deadline_is_reconciled_once() -> None:
    state = given(*EXTERNAL_PAID, refund("r1", 2_000))
    assert state is not None
    timed_out = given(*EXTERNAL_PAID, refund("r1", 2_000), *p.overdue_operations(state, NOW + DEADLINE_MS))
    late = p.decide_operation(timed_out, provider_refund("r1", amount=2_000), NOW + 9_000)
    inconsistent, refunded = late.events
    assert isinstance(inconsistent, p.PaymentOperationInconsistent) and inconsistent.kind == "refund"
    assert isinstance(refunded, p.PaymentRefunded) and refunded.refunded_total == Money(2_000, "USD")
    assert late.payment is not None and late.payment.refunded == 2_000
    assert late.payment.status == "partially_refunded" and late.payment.refunds["r1"].status == "succeeded"
    again = p.decide_operation(late.payment, provider_refund("r1", amount=2_000), NOW + 9_500)
    assert again.payment is None and again.events == late.events  # counted once
    assert p.decide_compensation(late.payment, inconsistent) == p.Decision(None)  # nothing to take back


def test_a_late_refund_success_that_would_refund_more_than_was_paid_is_left_for_an_operator() -> None:
    state = given(*EXTERNAL_PAID, refund("r1", 5_000))
    assert state is not None
    timed_out = given(*EXTERNAL_PAID, refund("r1", 5_000), *p.overdue_operations(state, NOW + DEADLINE_MS))
    refunded_again = given(*EXTERNAL_PAID, refund("r1", 5_000), *p.overdue_operations(state, NOW + DEADLINE_MS),
                           refund("r2", 5_000), provider_refund("r2"))  # fmt: skip
    assert timed_out is not None and refunded_again is not None and refunded_again.refunded == 5_000
    late = p.decide_operation(refunded_again, provider_refund("r1"), NOW)
    [inconsistent] = late.events
    assert isinstance(inconsistent, p.PaymentOperationInconsistent)
    assert inconsistent.expected_amount == Money(5_000, "USD") and "reconcile by hand" in inconsistent.reason
    assert late.payment is not None and late.payment.refunded == 5_000


def test_a_refund_the_worker_refuses_ends_failed_and_a_redelivery_repeats_the_same_refusal() -> None:
    state = given(*EXTERNAL_PAID, refund("r1", 4_000))
    refused = ask(state, refund("r2", 1_001))
    assert refused.rejection is not None and refused.rejection[0] == "exceeds_refundable"
    [failed] = refused.events
    assert isinstance(failed, p.RefundFailed) and failed.reason_code == "exceeds_refundable"
    assert refused.payment is not None and refused.payment.reserved() == 4_000
    again = p.decide_refund(refused.payment, refund("r2", 1_001), NOW + 77, DEADLINE_MS)
    assert again.payment is None and again.events == refused.events


def test_a_refund_of_an_unknown_payment_ends_failed() -> None:
    decision = ask(None, refund("r1", 100))
    [failed] = decision.events
    assert isinstance(failed, p.RefundFailed) and failed.reason_code == "unknown_payment"


# ---------------------------------------------------------------- provider amounts (issue 11, point 2)


def test_a_charge_reported_for_another_amount_fails_the_payment_and_gives_back_what_was_taken() -> None:
    state = given(created("external"))
    wrong = op(CHARGE, source="provider", amount=5_100, reference="ch_1")
    decision = p.decide_operation(state, wrong, NOW)
    failed, inconsistent = decision.events
    assert isinstance(failed, p.PaymentFailed) and failed.reason_code == "amount_mismatch"
    assert "5100 USD" in failed.reason and "5000 USD" in failed.reason
    assert isinstance(inconsistent, p.PaymentOperationInconsistent)
    assert (inconsistent.amount, inconsistent.expected_amount) == (Money(5_100, "USD"), Money(5_000, "USD"))
    assert decision.payment is not None and decision.payment.status == "failed"
    compensation = p.decide_compensation(decision.payment, inconsistent)
    assert compensation.effects == (
        p.ProviderRefund(p.compensation_operation_id(PID), PID, "simulator", "ch_1", Money(5_100, "USD")),
    )


def test_a_charge_reported_in_another_currency_is_refunded_in_that_currency() -> None:
    wrong = p.PaymentOperationCompleted(
        meta("eur"), PID, CHARGE, "charge", "succeeded", Money(5_000, "EUR"), "provider", "ch_1", None, None
    )
    decision = p.decide_operation(given(created("external")), wrong, NOW)
    assert decision.payment is not None and decision.payment.reason_code == "amount_mismatch"
    inconsistent = decision.events[1]
    assert isinstance(inconsistent, p.PaymentOperationInconsistent)
    refund_effect = p.decide_compensation(decision.payment, inconsistent).effects[0]
    assert isinstance(refund_effect, p.ProviderRefund) and refund_effect.amount == Money(5_000, "EUR")


def test_a_refund_reported_for_another_amount_fails_and_records_both_figures() -> None:
    state = given(*EXTERNAL_PAID, refund("r1", 2_000))
    decision = p.decide_operation(state, provider_refund("r1", amount=1_999), NOW)
    inconsistent, failed = decision.events
    assert isinstance(inconsistent, p.PaymentOperationInconsistent)
    assert (inconsistent.amount, inconsistent.expected_amount) == (Money(1_999, "USD"), Money(2_000, "USD"))
    assert isinstance(failed, p.RefundFailed) and failed.reason_code == "amount_mismatch"
    assert decision.payment is not None and decision.payment.refunded == 0 and decision.payment.reserved() == 0


def test_refund_outcomes_survive_the_table_round_trip() -> None:
    state = given(*EXTERNAL_PAID, refund("r1", 2_000), provider_refund("r1", "failed", amount=2_000))
    assert state is not None and state.refunds["r1"].failure_code == "expired_or_canceled_card"
    assert p.from_dict(p.to_dict(state)) == state


def test_the_table_row_is_what_asdict_would_write_and_shares_no_mutable_state() -> None:
    state = given(*EXTERNAL_PAID, refund("r1", 2_000), provider_refund("r1", "failed", amount=2_000))
    assert state is not None and state.operations and state.refunds
    row = p.to_dict(state)
    assert row == dataclasses.asdict(state)
    row["operations"].clear()
    row["refunds"].clear()
    assert state.operations and state.refunds, "the row is a copy: writing it never changes the state"
