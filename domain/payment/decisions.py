"""The payment saga's decisions: a new payment, an operation's outcome, a compensation, a
refund request. Each returns the state to write, the events to publish and the effects to ask for."""

from __future__ import annotations

from dataclasses import replace

from domain.events import EventMeta
from domain.ids import derive_id
from domain.money import Money
from domain.payment.model import (
    REFUNDABLE,
    Applied,
    Decision,
    Effect,
    Outcome,
    Payment,
    PaymentOperationCompleted,
    PaymentOperationInconsistent,
    PaymentOperationPending,
    ProviderCharge,
    ProviderRefund,
    Refund,
    RefundFailed,
    RefundRequested,
    RequestPayment,
    Status,
    WalletMovement,
    charge_operation_id,
    compensation_operation_id,
    deadline_operation_id,
    refund_of,
    refund_operation_id,
)
from domain.payment.outcomes import failed_event, outcome_events, refund_failed_event


def decide_created(payment: Payment | None, event: RequestPayment, now: int) -> Decision:
    if payment is not None:
        # Redelivered: re-issue the open request; its deterministic id makes it apply once.
        if payment.status == "processing" and payment.charge_operation_id not in payment.operations:
            return Decision(None, (), (_charge_request(payment),))
        if payment.status == "failed" and payment.reason_code in INVALID_CODES:
            return Decision(None, (failed_event(payment, event.meta.event_id, payment.created_at),))
        return Decision(None)
    state = Payment(
        event.payment_id,
        event.user_id,
        event.amount.amount,
        event.amount.currency,
        event.method,
        event.wallet_id,
        event.provider,
        event.provider_token,
        event.description,
        event.deadline_at,
        "processing",
        now,
        event.meta.correlation_id,
        charge_operation_id(event.payment_id, event.method),
        actor_subject=event.meta.actor_subject,
        actor_roles=event.meta.actor_roles,
    )
    invalid = _invalid(event)
    if invalid is not None:
        failed = replace(state, status="failed", reason_code=invalid[0], reason=invalid[1])
        return Decision(failed, (failed_event(failed, event.meta.event_id, now),))
    return Decision(state, (), (_charge_request(state),))


INVALID_CODES = frozenset({"invalid_amount", "invalid_method"})


def _invalid(event: RequestPayment) -> tuple[str, str] | None:
    if event.amount.amount <= 0:
        return "invalid_amount", "amount must be a positive number of minor units"
    if event.method == "wallet" and not event.wallet_id:
        return "invalid_method", "a wallet payment needs a wallet_id"
    if event.method == "external" and not (event.provider and event.provider_token):
        return "invalid_method", "an external payment needs a provider and a token"
    return None


def _charge_request(payment: Payment) -> Effect:
    if payment.method == "wallet":
        assert payment.wallet_id is not None
        return WalletMovement(
            payment.charge_operation_id,
            payment.wallet_id,
            "expense",
            payment.money,
            payment.payment_id,
            None,
            payment.description,
            payment.actor_subject,
            payment.actor_roles,
        )
    assert payment.provider is not None and payment.provider_token is not None
    return ProviderCharge(
        payment.charge_operation_id,
        payment.payment_id,
        payment.provider,
        payment.provider_token,
        payment.money,
        payment.actor_subject,
        payment.actor_roles,
        payment.deadline_at,
    )


def decide_pending(payment: Payment | None, pending: PaymentOperationPending) -> Decision:
    """The provider's pending answer: keep its reference, so that the deadline's failure and the
    views name the provider's object. A reference already known (from an earlier answer, or an
    outcome that came first) is kept: this moves no money and decides nothing."""
    if payment is None:
        return Decision(None)
    if pending.operation_id == payment.charge_operation_id:
        if payment.charge_reference is not None:
            return Decision(None)
        return Decision(replace(payment, charge_reference=pending.reference))
    refund = refund_of(payment, pending.operation_id)
    if refund is None or refund.reference is not None:
        return Decision(None)  # a compensation's answer: its outcome carries the reference
    recorded = replace(refund, reference=pending.reference)
    return Decision(replace(payment, refunds={**payment.refunds, refund.refund_id: recorded}))


def decide_operation(payment: Payment | None, op: PaymentOperationCompleted, now: int) -> Decision:
    if payment is None:
        return Decision(None, rejection=("unknown_payment", f"operation {op.operation_id} for an unknown payment"))
    seen = payment.operations.get(op.operation_id)
    if seen is not None:
        label, decided_at = seen
        return Decision(None, outcome_events(payment, op, Applied.of(label), decided_at))
    applied, state = _apply(payment, op)
    state = replace(state, operations={**state.operations, op.operation_id: (applied.label, now)})
    return Decision(state, outcome_events(state, op, applied, now))


def _apply(payment: Payment, op: PaymentOperationCompleted) -> tuple[Applied, Payment]:
    """The outcome label of a new operation, and the state it leaves."""
    pid = payment.payment_id
    if op.operation_id == payment.charge_operation_id:
        return _apply_charge(payment, op)
    if op.operation_id == deadline_operation_id(pid):
        if payment.status != "processing":
            return Applied(Outcome.IGNORED), payment
        reason = "the provider did not confirm the charge before the deadline"
        return Applied(Outcome.FAILED), replace(payment, status="failed", reason_code="provider_timeout", reason=reason)
    if op.operation_id == compensation_operation_id(pid):
        return Applied(Outcome.COMPENSATED if op.status == "succeeded" else Outcome.COMPENSATION_FAILED), payment
    refund = refund_of(payment, op.operation_id)
    if refund is not None:
        return _apply_refund(payment, refund, op)
    if op.status == "succeeded":
        return Applied(Outcome.INCONSISTENT, payment.status), payment
    return Applied(Outcome.IGNORED), payment


def _apply_charge(payment: Payment, op: PaymentOperationCompleted) -> tuple[Applied, Payment]:
    if payment.status == "processing":
        if op.status == "succeeded" and op.amount != payment.money:
            # Not the charge we asked for: fail the payment and give back what the provider says it took.
            reason = _mismatch_reason(op.amount, payment.money)
            failed = replace(
                payment, status="failed", reason_code="amount_mismatch", reason=reason, charge_reference=op.reference
            )
            return Applied(Outcome.CHARGE_MISMATCH), failed
        if op.status == "succeeded":
            return Applied(Outcome.SUCCEEDED), replace(payment, status="completed", charge_reference=op.reference)
        code = op.failure_code or "charge_failed"
        return Applied(Outcome.FAILED), replace(
            payment, status="failed", reason_code=code, reason=op.failure_reason or code
        )
    if op.status == "succeeded":
        # Money was taken for a payment that already failed: compensate.
        return Applied(Outcome.INCONSISTENT, payment.status), replace(payment, charge_reference=op.reference)
    return Applied(Outcome.IGNORED), payment


def _mismatch_reason(reported: Money, asked: Money) -> str:
    return (
        f"the provider reported {reported.amount} {reported.currency} "
        f"where {asked.amount} {asked.currency} was asked (minor units)"
    )


def _apply_refund(payment: Payment, refund: Refund, op: PaymentOperationCompleted) -> tuple[Applied, Payment]:
    asked = Money(refund.amount, payment.currency)
    if op.status == "failed" or op.operation_id != refund.operation_id:
        if refund.status != "pending":
            return Applied(Outcome.IGNORED), payment
        if op.source == "deadline":
            reason = "no answer from the provider before the refund's deadline"
            return Applied(Outcome.REFUND_FAILED), _with_refund_failed(payment, refund, "provider_timeout", reason)
        code = op.failure_code or "refund_failed"
        return Applied(Outcome.REFUND_FAILED), _with_refund_failed(payment, refund, code, op.failure_reason or code)
    if op.amount != asked:
        if refund.status != "pending":
            return Applied(Outcome.REFUND_UNRECONCILED), payment
        return Applied(Outcome.REFUND_MISMATCH), _with_refund_failed(
            payment, refund, "amount_mismatch", _mismatch_reason(op.amount, asked)
        )
    if refund.status == "pending":
        return Applied(Outcome.REFUNDED), _refund_succeeded(payment, refund)
    # The provider returned the money after we declared the refund failed. The money is
    # back with the customer, so the books follow it and count the refund now, once;
    # unless that would refund more than was paid, which is left for an operator.
    if payment.refunded + refund.amount <= payment.amount:
        return Applied(Outcome.REFUND_RECONCILED), _refund_succeeded(payment, refund)
    return Applied(Outcome.REFUND_UNRECONCILED), payment


def _with_refund_failed(payment: Payment, refund: Refund, code: str, reason: str) -> Payment:
    failed = replace(refund, status="failed", failure_code=code, failure_reason=reason)
    return replace(payment, refunds={**payment.refunds, refund.refund_id: failed})


def _refund_succeeded(payment: Payment, refund: Refund) -> Payment:
    total = payment.refunded + refund.amount
    done = replace(refund, status="succeeded", refunded_total_after=total)
    status: Status = "refunded" if total >= payment.amount else "partially_refunded"
    return replace(payment, status=status, refunded=total, refunds={**payment.refunds, refund.refund_id: done})


def decide_compensation(payment: Payment | None, event: PaymentOperationInconsistent) -> Decision:
    """Give back money taken for a payment that can no longer take it."""
    if payment is None or event.kind != "charge" or event.status != "succeeded":
        return Decision(None)
    if event.operation_id != payment.charge_operation_id or payment.status != "failed":
        return Decision(None, rejection=("not_compensable", "only a charge that succeeded after a failure is reverted"))
    op_id = compensation_operation_id(payment.payment_id)
    if op_id in payment.operations:
        return Decision(None)
    if payment.method == "wallet":
        assert payment.wallet_id is not None
        movement = WalletMovement(
            op_id,
            payment.wallet_id,
            "income",
            payment.money,
            payment.payment_id,
            payment.charge_operation_id,
            "compensation: payment failed after the debit",
            payment.actor_subject,
            payment.actor_roles,
        )
        return Decision(None, (), (movement,))
    assert payment.provider is not None
    reference = event.reference or payment.charge_reference
    if reference is None:
        return Decision(None, rejection=("no_reference", "the provider charge has no reference to refund"))
    # What the provider says it took, which is not always what we asked for (amount_mismatch).
    refund = ProviderRefund(
        op_id,
        payment.payment_id,
        payment.provider,
        reference,
        event.amount,
        actor_subject=payment.actor_subject,
        actor_roles=payment.actor_roles,
    )
    return Decision(None, (), (refund,))


def decide_refund(
    payment: Payment | None, event: RefundRequested, now: int, provider_deadline_ms: int | None = None
) -> Decision:
    """A refund request: ask the wallet or the provider, or refuse it with a RefundFailed.

    A provider refund gets a deadline `provider_deadline_ms` from now, like a charge."""
    if payment is None:
        unknown = ("unknown_payment", f"payment {event.payment_id} not found")
        meta = EventMeta(
            derive_id("RefundFailed", event.refund_id), event.meta.occurred_at, event.payment_id, event.meta.event_id
        )
        failed = RefundFailed(meta, event.payment_id, event.refund_id, event.amount, *unknown)
        return Decision(None, (failed,), rejection=unknown)
    seen = payment.refunds.get(event.refund_id)
    if seen is not None:
        if seen.status == "pending":
            return Decision(None, (), (_refund_request(payment, seen),))
        if seen.decided_at is not None:  # refused when requested: the same refusal again
            return Decision(None, (refund_failed_event(payment, seen, event.meta.event_id, seen.decided_at),))
        return Decision(None)
    refund = Refund(
        event.refund_id,
        refund_operation_id(event.refund_id),
        event.amount.amount,
        "pending",
        event.reason,
        actor_subject=event.meta.actor_subject,
        actor_roles=event.meta.actor_roles,
        deadline_at=None
        if payment.method != "external" or provider_deadline_ms is None
        else now + provider_deadline_ms,
    )
    refusal = _refund_refusal(payment, event)
    if refusal is not None:
        refused = replace(refund, status="failed", failure_code=refusal[0], failure_reason=refusal[1], decided_at=now)
        state = replace(payment, refunds={**payment.refunds, refund.refund_id: refused})
        return Decision(state, (refund_failed_event(state, refused, event.meta.event_id, now),), rejection=refusal)
    state = replace(payment, refunds={**payment.refunds, refund.refund_id: refund})
    return Decision(state, (), (_refund_request(state, refund),))


def _refund_refusal(payment: Payment, event: RefundRequested) -> tuple[str, str] | None:
    if payment.status not in REFUNDABLE:
        return "not_refundable", f"payment is {payment.status}"
    if event.amount.currency != payment.currency:
        return "currency_mismatch", f"payment currency is {payment.currency}"
    if event.amount.amount <= 0:
        return "invalid_amount", "refund amount must be positive"
    left = payment.amount - payment.reserved()
    if event.amount.amount > left:
        return "exceeds_refundable", f"only {left} {payment.currency} can be refunded"
    return None


def _refund_request(payment: Payment, refund: Refund) -> Effect:
    money = Money(refund.amount, payment.currency)
    if payment.method == "wallet":
        assert payment.wallet_id is not None
        # A full refund reverts the debit (the wallet links them); a partial one is a plain income.
        # Refunds that failed moved nothing, so a full refund after them still reverts the debit.
        others = [r for r in payment.refunds.values() if r.refund_id != refund.refund_id]
        whole = refund.amount == payment.amount and all(r.status == "failed" for r in others)
        return WalletMovement(
            refund.operation_id,
            payment.wallet_id,
            "income",
            money,
            payment.payment_id,
            payment.charge_operation_id if whole else None,
            refund.reason or "refund",
            refund.actor_subject,
            refund.actor_roles,
        )
    assert payment.provider is not None and payment.charge_reference is not None
    return ProviderRefund(
        refund.operation_id,
        payment.payment_id,
        payment.provider,
        payment.charge_reference,
        money,
        refund.deadline_at,
        payment.actor_subject,
        payment.actor_roles,
    )
