"""The fault suite's refund invariants catch what they are there to catch (pure: events as dicts)."""

from __future__ import annotations

from typing import Any

from domain.payment import charge_operation_id, refund_operation_id
from tests.chaos.invariants import LogState, log_payments_settled, provider_agrees

PID = "22222222-2222-4222-8222-222222222222"


def usd(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "USD"}


def ev(event_type: str, **fields: Any) -> dict[str, Any]:
    return {"envelope": {"event_type": event_type}, "payment_id": PID, **fields}


def op(operation_id: str, kind: str, status: str, amount: int) -> dict[str, Any]:
    return ev("PaymentOperationCompleted", operation_id=operation_id, kind=kind, status=status, amount=usd(amount))


def log_of(*events: dict[str, Any]) -> LogState:
    state = LogState()
    for event in (
        ev("PaymentCreated", method="external", amount=usd(1_000), wallet_id=None),
        op(charge_operation_id(PID, "external"), "charge", "succeeded", 1_000),
        ev("PaymentSucceeded"),
        *events,
    ):
        state.add(event)
    return state


def refunded(refund_id: str, amount: int, total: int) -> dict[str, Any]:
    status = "refunded" if total == 1_000 else "partially_refunded"
    return ev("PaymentRefunded", refund_id=refund_id, amount=usd(amount), refunded_total=usd(total), status=status)


def failed(refund_id: str, amount: int) -> dict[str, Any]:
    return ev("RefundFailed", refund_id=refund_id, amount=usd(amount), reason_code="provider_timeout", reason="late")


def requested(refund_id: str, amount: int) -> dict[str, Any]:
    return ev("RefundRequested", refund_id=refund_id, amount=usd(amount))


def test_a_refund_with_no_outcome_is_reported() -> None:
    [problem] = log_payments_settled(log_of(requested("r1", 400)), [PID])
    assert "r1" in problem and "never succeeded or failed" in problem


def test_a_failed_and_a_succeeded_refund_settle_the_payment() -> None:
    log = log_of(
        requested("r1", 400),
        failed("r1", 400),
        requested("r2", 400),
        op(refund_operation_id("r2"), "refund", "succeeded", 400),
        refunded("r2", 400, 400),
    )
    assert log_payments_settled(log, [PID]) == []


def test_a_late_success_must_be_flagged_as_reconciled() -> None:
    late = (
        requested("r1", 400),
        failed("r1", 400),
        op(refund_operation_id("r1"), "refund", "succeeded", 400),
        refunded("r1", 400, 400),
    )
    [problem] = log_payments_settled(log_of(*late), [PID])
    assert "never flagged as reconciled" in problem
    flagged = ev("PaymentOperationInconsistent", operation_id=refund_operation_id("r1"), kind="refund")
    flagged.update(status="succeeded", amount=usd(400))
    assert log_payments_settled(log_of(*late, flagged), [PID]) == []


def test_money_returned_by_a_refund_operation_but_never_counted_is_reported() -> None:
    log = log_of(requested("r1", 400), failed("r1", 400), op(refund_operation_id("r1"), "refund", "succeeded", 400))
    [problem] = log_payments_settled(log, [PID])
    assert "neither counted nor flagged" in problem


def test_the_providers_refunds_must_be_the_ones_we_counted() -> None:
    log = log_of(requested("r1", 400), failed("r1", 400))
    meta = {"payment_id": PID, "operation_id": refund_operation_id("r1")}
    charge = {"object": "charge", "status": "succeeded", "amount": 1_000, "refunded": 400, "id": "ch_1"}
    refund = {"object": "refund", "status": "succeeded", "amount": 400, "metadata": meta, "id": "re_1"}
    problems = provider_agrees(log, {PID: [charge, refund]})
    assert any("provider refunds" in p for p in problems) and any("provider holds 600" in p for p in problems)
    log.add(op(refund_operation_id("r1"), "refund", "succeeded", 400))
    log.add(refunded("r1", 400, 400))
    assert provider_agrees(log, {PID: [charge, refund]}) == []
