"""The payment aggregate: one payment, the operations applied to it, its refunds.

State lives in the payment worker's table, keyed by payment id (one writer per
partition). Every id is derived from what caused it, so a redelivered event names
the same debit, charge, refund or compensation, and the wallet or the provider
applies it once. An operation id already applied re-emits the same outcome events
(same ids, same timestamps) instead of deciding again: a crash between the table
write and the publish loses nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from domain.events import EventMeta
from domain.ids import derive_id
from domain.money import Money

Method = Literal["wallet", "external"]
Status = Literal["initiated", "processing", "completed", "failed", "refunded", "partially_refunded"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "refunded", "partially_refunded"})
REFUNDABLE: frozenset[str] = frozenset({"completed", "partially_refunded"})


def charge_operation_id(payment_id: str, method: str) -> str:
    # The wallet debit's movement id is the operation id; so is the provider charge's idempotency key.
    return derive_id("payment-debit" if method == "wallet" else "payment-charge", payment_id)


def compensation_operation_id(payment_id: str) -> str:
    return derive_id("payment-compensation", payment_id)


def refund_operation_id(refund_id: str) -> str:
    return derive_id("payment-refund", refund_id)


def deadline_operation_id(payment_id: str) -> str:
    return derive_id("payment-deadline", payment_id)


def refund_deadline_operation_id(refund_id: str) -> str:
    return derive_id("refund-deadline", refund_id)


def provider_operation_id(provider: str, provider_reference: str) -> str:
    return derive_id("provider-operation", provider, provider_reference)


# ---------------------------------------------------------------- events (one per Avro record)


@dataclass(frozen=True)
class PaymentCreated:
    meta: EventMeta
    payment_id: str
    user_id: str
    amount: Money
    method: Method
    wallet_id: str | None
    provider: str | None
    provider_token: str | None
    description: str | None
    deadline_at: int | None


@dataclass(frozen=True)
class PaymentOperationCompleted:
    meta: EventMeta
    payment_id: str
    operation_id: str
    kind: Literal["charge", "refund"]
    status: Literal["succeeded", "failed"]
    amount: Money
    source: Literal["wallet", "provider", "deadline"]
    reference: str | None
    failure_code: str | None
    failure_reason: str | None


@dataclass(frozen=True)
class PaymentOperationInconsistent:
    meta: EventMeta
    payment_id: str
    operation_id: str
    kind: Literal["charge", "refund"]
    status: Literal["succeeded", "failed"]
    amount: Money
    source: Literal["wallet", "provider", "deadline"]
    reference: str | None
    payment_status: str
    reason: str
    # What we asked for when the provider reported another figure (amount holds the reported one).
    expected_amount: Money | None = None


@dataclass(frozen=True)
class PaymentSucceeded:
    meta: EventMeta
    payment_id: str
    user_id: str
    amount: Money
    method: Method


@dataclass(frozen=True)
class PaymentFailed:
    meta: EventMeta
    payment_id: str
    user_id: str
    amount: Money
    method: Method
    reason_code: str
    reason: str


@dataclass(frozen=True)
class RefundRequested:
    meta: EventMeta
    payment_id: str
    refund_id: str
    amount: Money
    reason: str | None


@dataclass(frozen=True)
class PaymentRefunded:
    meta: EventMeta
    payment_id: str
    refund_id: str
    amount: Money
    refunded_total: Money
    status: str


@dataclass(frozen=True)
class RefundFailed:
    meta: EventMeta
    payment_id: str
    refund_id: str
    amount: Money
    reason_code: str
    reason: str


PaymentEvent = PaymentOperationInconsistent | PaymentSucceeded | PaymentFailed | PaymentRefunded | RefundFailed


# ---------------------------------------------------------------- effects (requests to the wallet or provider)


@dataclass(frozen=True)
class WalletMovement:
    movement_id: str
    wallet_id: str
    type: Literal["income", "expense"]
    amount: Money
    payment_id: str
    reverts_movement_id: str | None
    description: str | None
    # Who asked: the payer for the debit and its compensation, the refund's requester for a refund.
    actor_subject: str | None = None
    actor_roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProviderCharge:
    operation_id: str
    payment_id: str
    provider: str
    token: str
    amount: Money


@dataclass(frozen=True)
class ProviderRefund:
    operation_id: str
    payment_id: str
    provider: str
    charge_reference: str
    amount: Money
    # A customer refund has a deadline that decides it when the provider cannot be reached;
    # a compensation has none, so reaching the provider must be retried.
    deadline_at: int | None = None


Effect = WalletMovement | ProviderCharge | ProviderRefund


# ---------------------------------------------------------------- state


@dataclass(frozen=True)
class Refund:
    refund_id: str
    operation_id: str
    amount: int
    status: Literal["pending", "succeeded", "failed"]
    reason: str | None
    refunded_total_after: int = 0
    actor_subject: str | None = None
    actor_roles: tuple[str, ...] = ()
    deadline_at: int | None = None  # provider refunds only: past it with no answer, the refund fails
    failure_code: str | None = None
    failure_reason: str | None = None
    decided_at: int | None = None  # when a refund request was refused (no operation records it)


@dataclass(frozen=True)
class Payment:
    payment_id: str
    user_id: str
    amount: int
    currency: str
    method: Method
    wallet_id: str | None
    provider: str | None
    provider_token: str | None
    description: str | None
    deadline_at: int | None
    status: Status
    created_at: int
    correlation_id: str
    charge_operation_id: str
    charge_reference: str | None = None
    reason_code: str | None = None
    reason: str | None = None
    refunded: int = 0
    # operation id -> (outcome, decided at): how redelivery re-emits the same events
    operations: dict[str, tuple[str, int]] = field(default_factory=dict)
    refunds: dict[str, Refund] = field(default_factory=dict)
    # Who created the payment; the saga's events and commands keep this actor.
    actor_subject: str | None = None
    actor_roles: tuple[str, ...] = ()

    @property
    def money(self) -> Money:
        return Money(self.amount, self.currency)

    def reserved(self) -> int:
        """Refunded plus refunds still in flight: what can no longer be refunded."""
        return self.refunded + sum(r.amount for r in self.refunds.values() if r.status == "pending")

    def next_deadline(self) -> int | None:
        """The earliest moment something of this payment waits on the provider until."""
        due = [r.deadline_at for r in self.refunds.values() if r.status == "pending" and r.deadline_at is not None]
        if self.status == "processing" and self.deadline_at is not None:
            due.append(self.deadline_at)
        return min(due, default=None)


def to_dict(payment: Payment) -> dict[str, Any]:
    return dataclasses.asdict(payment)


def from_dict(raw: dict[str, Any]) -> Payment:
    values = dict(raw)
    values["operations"] = {k: (v[0], v[1]) for k, v in raw["operations"].items()}
    values["refunds"] = {
        k: Refund(**{**v, "actor_roles": tuple(v.get("actor_roles", ()))}) for k, v in raw["refunds"].items()
    }
    values["actor_roles"] = tuple(raw.get("actor_roles", ()))
    return Payment(**values)


@dataclass(frozen=True)
class Decision:
    payment: Payment | None  # None: nothing to write
    events: tuple[PaymentEvent, ...] = ()
    effects: tuple[Effect, ...] = ()
    rejection: tuple[str, str] | None = None  # (code, reason) when a request is refused


# ---------------------------------------------------------------- decisions


def decide_created(payment: Payment | None, event: PaymentCreated, now: int) -> Decision:
    if payment is not None:
        # Redelivered: re-issue the open request; its deterministic id makes it apply once.
        if payment.status == "processing" and payment.charge_operation_id not in payment.operations:
            return Decision(None, (), (_charge_request(payment),))
        if payment.status == "failed" and payment.reason_code in INVALID_CODES:
            return Decision(None, (_failed(payment, event.meta.event_id, payment.created_at),))
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
        return Decision(failed, (_failed(failed, event.meta.event_id, now),))
    return Decision(state, (), (_charge_request(state),))


INVALID_CODES = frozenset({"invalid_amount", "invalid_method"})


def _invalid(event: PaymentCreated) -> tuple[str, str] | None:
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
        payment.charge_operation_id, payment.payment_id, payment.provider, payment.provider_token, payment.money
    )


def decide_operation(payment: Payment | None, op: PaymentOperationCompleted, now: int) -> Decision:
    if payment is None:
        return Decision(None, rejection=("unknown_payment", f"operation {op.operation_id} for an unknown payment"))
    seen = payment.operations.get(op.operation_id)
    if seen is not None:
        return Decision(None, _outcome_events(payment, op, *seen))
    outcome, state = _apply(payment, op)
    state = replace(state, operations={**state.operations, op.operation_id: (outcome, now)})
    return Decision(state, _outcome_events(state, op, outcome, now))


def _apply(payment: Payment, op: PaymentOperationCompleted) -> tuple[str, Payment]:
    """The outcome label of a new operation, and the state it leaves."""
    pid = payment.payment_id
    if op.operation_id == payment.charge_operation_id:
        return _apply_charge(payment, op)
    if op.operation_id == deadline_operation_id(pid):
        if payment.status != "processing":
            return "ignored", payment
        reason = "the provider did not confirm the charge before the deadline"
        return "failed", replace(payment, status="failed", reason_code="provider_timeout", reason=reason)
    if op.operation_id == compensation_operation_id(pid):
        return ("compensated" if op.status == "succeeded" else "compensation_failed"), payment
    refund = _refund_of(payment, op.operation_id)
    if refund is not None:
        return _apply_refund(payment, refund, op)
    if op.status == "succeeded":
        return f"inconsistent:{payment.status}", payment
    return "ignored", payment


def _apply_charge(payment: Payment, op: PaymentOperationCompleted) -> tuple[str, Payment]:
    if payment.status == "processing":
        if op.status == "succeeded" and op.amount != payment.money:
            # Not the charge we asked for: fail the payment and give back what the provider says it took.
            reason = _mismatch_reason(op.amount, payment.money)
            failed = replace(
                payment, status="failed", reason_code="amount_mismatch", reason=reason, charge_reference=op.reference
            )
            return "charge_mismatch", failed
        if op.status == "succeeded":
            return "succeeded", replace(payment, status="completed", charge_reference=op.reference)
        code = op.failure_code or "charge_failed"
        return "failed", replace(payment, status="failed", reason_code=code, reason=op.failure_reason or code)
    if op.status == "succeeded":
        # Money was taken for a payment that already failed: compensate.
        return f"inconsistent:{payment.status}", replace(payment, charge_reference=op.reference)
    return "ignored", payment


def _mismatch_reason(reported: Money, asked: Money) -> str:
    return (
        f"the provider reported {reported.amount} {reported.currency} "
        f"where {asked.amount} {asked.currency} was asked (minor units)"
    )


def _refund_of(payment: Payment, operation_id: str) -> Refund | None:
    """The refund an operation (the refund itself, or its deadline) belongs to."""
    for refund in payment.refunds.values():
        if operation_id in (refund.operation_id, refund_deadline_operation_id(refund.refund_id)):
            return refund
    return None


def _apply_refund(payment: Payment, refund: Refund, op: PaymentOperationCompleted) -> tuple[str, Payment]:
    asked = Money(refund.amount, payment.currency)
    if op.status == "failed" or op.operation_id != refund.operation_id:
        if refund.status != "pending":
            return "ignored", payment
        if op.source == "deadline":
            reason = "no answer from the provider before the refund's deadline"
            return "refund_failed", _refund_failed(payment, refund, "provider_timeout", reason)
        code = op.failure_code or "refund_failed"
        return "refund_failed", _refund_failed(payment, refund, code, op.failure_reason or code)
    if op.amount != asked:
        if refund.status != "pending":
            return "refund_unreconciled", payment
        return "refund_mismatch", _refund_failed(payment, refund, "amount_mismatch", _mismatch_reason(op.amount, asked))
    if refund.status == "pending":
        return "refunded", _refund_succeeded(payment, refund)
    # The provider returned the money after we declared the refund failed. The money is
    # back with the customer, so the books follow it and count the refund now, once;
    # unless that would refund more than was paid, which is left for an operator.
    if payment.refunded + refund.amount <= payment.amount:
        return "refund_reconciled", _refund_succeeded(payment, refund)
    return "refund_unreconciled", payment


def _refund_failed(payment: Payment, refund: Refund, code: str, reason: str) -> Payment:
    failed = replace(refund, status="failed", failure_code=code, failure_reason=reason)
    return replace(payment, refunds={**payment.refunds, refund.refund_id: failed})


def _refund_succeeded(payment: Payment, refund: Refund) -> Payment:
    total = payment.refunded + refund.amount
    done = replace(refund, status="succeeded", refunded_total_after=total)
    status: Status = "refunded" if total >= payment.amount else "partially_refunded"
    return replace(payment, status=status, refunded=total, refunds={**payment.refunds, refund.refund_id: done})


def _outcome_events(payment: Payment, op: PaymentOperationCompleted, outcome: str, at: int) -> tuple[PaymentEvent, ...]:
    """The events an applied operation published; the same inputs always give the same events."""
    cause = op.meta.event_id
    if outcome == "succeeded":
        meta = EventMeta(derive_id("PaymentSucceeded", payment.payment_id), at, payment.correlation_id, cause)
        return (PaymentSucceeded(meta, payment.payment_id, payment.user_id, payment.money, payment.method),)
    if outcome == "failed":
        return (_failed(payment, cause, at),)
    if outcome == "charge_mismatch":
        return (
            _failed(payment, cause, at),
            _inconsistent(payment, op, at, payment.reason or "", payment.money),
        )
    if outcome.startswith("inconsistent:"):
        status = outcome.split(":", 1)[1]
        charge = op.operation_id == payment.charge_operation_id
        reason = (
            f"{op.kind} {op.status} from {op.source} arrived for a payment that is {status}"
            if charge
            else f"operation {op.operation_id} is not one this payment asked for"
        )
        return (_inconsistent(payment, op, at, reason, payment.money if charge else None, status),)
    refund = _refund_of(payment, op.operation_id)
    if refund is None:
        return ()
    asked = Money(refund.amount, payment.currency)
    if outcome == "refunded":
        return (_refunded(payment, refund, cause, at),)
    if outcome == "refund_failed":
        return (_refund_failed_event(payment, refund, cause, at),)
    if outcome == "refund_mismatch":
        reason = f"refund {refund.refund_id}: {refund.failure_reason}"
        return (_inconsistent(payment, op, at, reason, asked), _refund_failed_event(payment, refund, cause, at))
    if outcome == "refund_reconciled":
        reason = (
            f"refund {refund.refund_id} succeeded after it was declared failed ({refund.failure_code}); counted now"
        )
        return (_inconsistent(payment, op, at, reason, asked), _refunded(payment, refund, cause, at))
    if outcome == "refund_unreconciled":
        reason = (
            f"refund {refund.refund_id} reported {op.amount.amount} {op.amount.currency} succeeded after it "
            f"was declared {refund.status}; not counted (it would exceed what was paid or differs from what was "
            "asked): reconcile by hand"
        )
        return (_inconsistent(payment, op, at, reason, asked),)
    return ()


def _inconsistent(
    payment: Payment,
    op: PaymentOperationCompleted,
    at: int,
    reason: str,
    expected: Money | None,
    payment_status: str | None = None,
) -> PaymentOperationInconsistent:
    meta = EventMeta(
        derive_id("PaymentOperationInconsistent", op.operation_id), at, payment.correlation_id, op.meta.event_id
    )
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


def _refunded(payment: Payment, refund: Refund, cause: str, at: int) -> PaymentRefunded:
    meta = EventMeta(derive_id("PaymentRefunded", refund.refund_id), at, payment.correlation_id, cause)
    status = "refunded" if refund.refunded_total_after >= payment.amount else "partially_refunded"
    return PaymentRefunded(
        meta,
        payment.payment_id,
        refund.refund_id,
        Money(refund.amount, payment.currency),
        Money(refund.refunded_total_after, payment.currency),
        status,
    )


def _refund_failed_event(payment: Payment, refund: Refund, cause: str, at: int) -> RefundFailed:
    # Named after the refund: a redelivery re-emits this very event.
    meta = EventMeta(derive_id("RefundFailed", refund.refund_id), at, payment.correlation_id, cause)
    return RefundFailed(
        meta,
        payment.payment_id,
        refund.refund_id,
        Money(refund.amount, payment.currency),
        refund.failure_code or "refund_failed",
        refund.failure_reason or "the refund failed",
    )


def _failed(payment: Payment, cause: str, at: int) -> PaymentFailed:
    meta = EventMeta(derive_id("PaymentFailed", payment.payment_id), at, payment.correlation_id, cause)
    return PaymentFailed(
        meta,
        payment.payment_id,
        payment.user_id,
        payment.money,
        payment.method,
        payment.reason_code or "failed",
        payment.reason or "payment failed",
    )


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
    return Decision(None, (), (ProviderRefund(op_id, payment.payment_id, payment.provider, reference, event.amount),))


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
            return Decision(None, (_refund_failed_event(payment, seen, event.meta.event_id, seen.decided_at),))
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
        return Decision(state, (_refund_failed_event(state, refused, event.meta.event_id, now),), rejection=refusal)
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
        refund.operation_id, payment.payment_id, payment.provider, payment.charge_reference, money, refund.deadline_at
    )


def overdue(payment: Payment, now: int) -> PaymentOperationCompleted | None:
    """The deadline's failed operation for a payment still waiting on the provider past it."""
    if payment.status != "processing" or payment.deadline_at is None or now < payment.deadline_at:
        return None
    op_id = deadline_operation_id(payment.payment_id)
    if op_id in payment.operations:
        return None
    reason = "no answer from the provider before the deadline"
    return _deadline_passed(payment, op_id, "charge", payment.money, now, reason)


def overdue_operations(payment: Payment, now: int) -> tuple[PaymentOperationCompleted, ...]:
    """Every deadline of this payment passed with no answer: its charge's and its refunds'."""
    charge = overdue(payment, now)
    refunds = tuple(
        _deadline_passed(
            payment,
            refund_deadline_operation_id(refund.refund_id),
            "refund",
            Money(refund.amount, payment.currency),
            now,
            "no answer from the provider before the refund's deadline",
        )
        for refund in payment.refunds.values()
        if refund.status == "pending"
        and refund.deadline_at is not None
        and now >= refund.deadline_at
        and refund_deadline_operation_id(refund.refund_id) not in payment.operations
    )
    return ((charge,) if charge is not None else ()) + refunds


def _deadline_passed(
    payment: Payment, op_id: str, kind: Literal["charge", "refund"], amount: Money, now: int, reason: str
) -> PaymentOperationCompleted:
    meta = EventMeta(derive_id("PaymentOperationCompleted", op_id), now, payment.correlation_id, None)
    return PaymentOperationCompleted(
        meta, payment.payment_id, op_id, kind, "failed", amount, "deadline", None, "provider_timeout", reason
    )


def operation_from_movement(
    meta: EventMeta,
    payment_id: str,
    movement_id: str,
    movement_type: str,
    amount: Money,
    applied: bool,
    reason_code: str | None,
    reason: str | None,
) -> PaymentOperationCompleted:
    """A wallet movement's outcome as an operation of its payment; the movement id is the operation id."""
    op_meta = EventMeta(
        derive_id("PaymentOperationCompleted", movement_id), meta.occurred_at, meta.correlation_id, meta.event_id
    )
    return PaymentOperationCompleted(
        op_meta,
        payment_id,
        movement_id,
        "charge" if movement_type == "expense" else "refund",
        "succeeded" if applied else "failed",
        amount,
        "wallet",
        movement_id,
        None if applied else reason_code,
        None if applied else reason,
    )


def operation_from_provider(
    meta: EventMeta,
    payment_id: str,
    provider: str,
    provider_reference: str,
    operation_id: str | None,
    kind: Literal["charge", "refund"],
    status: str,
    amount: Money,
    failure_reason: str | None,
) -> PaymentOperationCompleted | None:
    """A provider update as an operation; None while the provider says pending.

    The operation id is our idempotency key the provider echoes (else its object id),
    so duplicate and out-of-order deliveries about one charge are one operation.
    """
    if status not in ("succeeded", "failed"):
        return None
    op_id = operation_id or provider_operation_id(provider, provider_reference)
    op_meta = EventMeta(
        derive_id("PaymentOperationCompleted", op_id), meta.occurred_at, meta.correlation_id, meta.event_id
    )
    failed = status == "failed"
    return PaymentOperationCompleted(
        op_meta,
        payment_id,
        op_id,
        kind,
        "succeeded" if not failed else "failed",
        amount,
        "provider",
        provider_reference,
        (failure_reason or "declined") if failed else None,
        (f"the provider declined the {kind}: {failure_reason or 'declined'}") if failed else None,
    )
