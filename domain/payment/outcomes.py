"""The events an applied operation publishes; the same inputs always give the same events
(same ids, same timestamps), so a redelivery re-emits them byte for byte."""

from __future__ import annotations

from domain.ids import derive_id
from domain.money import Money
from domain.payment.model import (
    Applied,
    Outcome,
    Payment,
    PaymentEvent,
    PaymentFailed,
    PaymentOperationCompleted,
    PaymentOperationInconsistent,
    PaymentRefunded,
    PaymentSucceeded,
    Refund,
    RefundFailed,
    meta_for,
    refund_of,
)


def outcome_events(
    payment: Payment, op: PaymentOperationCompleted, applied: Applied, at: int
) -> tuple[PaymentEvent, ...]:
    """The events an applied operation published; the same inputs always give the same events."""
    cause, outcome = op.meta.event_id, applied.outcome
    if outcome is Outcome.SUCCEEDED:
        meta = meta_for(payment, derive_id("PaymentSucceeded", payment.payment_id), at, cause)
        return (PaymentSucceeded(meta, payment.payment_id, payment.user_id, payment.money, payment.method),)
    if outcome is Outcome.FAILED:
        return (failed_event(payment, cause, at),)
    if outcome is Outcome.CHARGE_MISMATCH:
        return (
            failed_event(payment, cause, at),
            inconsistent(payment, op, at, payment.reason or "", payment.money),
        )
    if outcome is Outcome.INCONSISTENT:
        status = applied.status_then or payment.status
        charge = op.operation_id == payment.charge_operation_id
        reason = (
            f"{op.kind} {op.status} from {op.source} arrived for a payment that is {status}"
            if charge
            else f"operation {op.operation_id} is not one this payment asked for"
        )
        return (inconsistent(payment, op, at, reason, payment.money if charge else None, status),)
    refund = refund_of(payment, op.operation_id)
    if refund is None:
        return ()
    asked = Money(refund.amount, payment.currency)
    if outcome is Outcome.REFUNDED:
        return (refunded(payment, refund, cause, at),)
    if outcome is Outcome.REFUND_FAILED:
        return (refund_failed_event(payment, refund, cause, at),)
    if outcome is Outcome.REFUND_MISMATCH:
        reason = f"refund {refund.refund_id}: {refund.failure_reason}"
        return (inconsistent(payment, op, at, reason, asked), refund_failed_event(payment, refund, cause, at))
    if outcome is Outcome.REFUND_RECONCILED:
        reason = (
            f"refund {refund.refund_id} succeeded after it was declared failed ({refund.failure_code}); counted now"
        )
        return (inconsistent(payment, op, at, reason, asked), refunded(payment, refund, cause, at))
    if outcome is Outcome.REFUND_UNRECONCILED:
        reason = (
            f"refund {refund.refund_id} reported {op.amount.amount} {op.amount.currency} succeeded after it "
            f"was declared {refund.status}; not counted (it would exceed what was paid or differs from what was "
            "asked): reconcile by hand"
        )
        return (inconsistent(payment, op, at, reason, asked),)
    return ()


def inconsistent(
    payment: Payment,
    op: PaymentOperationCompleted,
    at: int,
    reason: str,
    expected: Money | None,
    payment_status: str | None = None,
) -> PaymentOperationInconsistent:
    meta = meta_for(payment, derive_id("PaymentOperationInconsistent", op.operation_id), at, op.meta.event_id)
    return PaymentOperationInconsistent(
        meta,
        payment.payment_id,
        op.operation_id,
        op.kind,
        op.status,
        op.amount,
        op.source,
        op.reference,
        payment_status or payment.status,
        reason,
        expected,
    )


def refunded(payment: Payment, refund: Refund, cause: str, at: int) -> PaymentRefunded:
    meta = meta_for(payment, derive_id("PaymentRefunded", refund.refund_id), at, cause)
    status = "refunded" if refund.refunded_total_after >= payment.amount else "partially_refunded"
    return PaymentRefunded(
        meta,
        payment.payment_id,
        refund.refund_id,
        Money(refund.amount, payment.currency),
        Money(refund.refunded_total_after, payment.currency),
        status,
    )


def refund_failed_event(payment: Payment, refund: Refund, cause: str, at: int) -> RefundFailed:
    # Named after the refund: a redelivery re-emits this very event.
    meta = meta_for(payment, derive_id("RefundFailed", refund.refund_id), at, cause)
    return RefundFailed(
        meta,
        payment.payment_id,
        refund.refund_id,
        Money(refund.amount, payment.currency),
        refund.failure_code or "refund_failed",
        refund.failure_reason or "the refund failed",
    )


def failed_event(payment: Payment, cause: str, at: int) -> PaymentFailed:
    meta = meta_for(payment, derive_id("PaymentFailed", payment.payment_id), at, cause)
    return PaymentFailed(
        meta,
        payment.payment_id,
        payment.user_id,
        payment.money,
        payment.method,
        payment.reason_code or "failed",
        payment.reason or "payment failed",
    )
