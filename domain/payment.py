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


PaymentEvent = PaymentOperationInconsistent | PaymentSucceeded | PaymentFailed | PaymentRefunded


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
        if payment.status == "processing":
            if op.status == "succeeded":
                return "succeeded", replace(payment, status="completed", charge_reference=op.reference)
            code = op.failure_code or "charge_failed"
            return "failed", replace(payment, status="failed", reason_code=code, reason=op.failure_reason or code)
        if op.status == "succeeded":
            # Money was taken for a payment that already failed: compensate.
            return f"inconsistent:{payment.status}", replace(payment, charge_reference=op.reference)
        return "ignored", payment
    if op.operation_id == deadline_operation_id(pid):
        if payment.status != "processing":
            return "ignored", payment
        reason = "the provider did not confirm the charge before the deadline"
        return "failed", replace(payment, status="failed", reason_code="provider_timeout", reason=reason)
    if op.operation_id == compensation_operation_id(pid):
        return ("compensated" if op.status == "succeeded" else "compensation_failed"), payment
    refund = next((r for r in payment.refunds.values() if r.operation_id == op.operation_id), None)
    if refund is not None and refund.status == "pending":
        if op.status == "failed":
            refunds = {**payment.refunds, refund.refund_id: replace(refund, status="failed")}
            return "refund_failed", replace(payment, refunds=refunds)
        total = payment.refunded + refund.amount
        done = replace(refund, status="succeeded", refunded_total_after=total)
        status: Status = "refunded" if total >= payment.amount else "partially_refunded"
        return "refunded", replace(
            payment, status=status, refunded=total, refunds={**payment.refunds, refund.refund_id: done}
        )
    if op.status == "succeeded":
        return f"inconsistent:{payment.status}", payment
    return "ignored", payment


def _outcome_events(payment: Payment, op: PaymentOperationCompleted, outcome: str, at: int) -> tuple[PaymentEvent, ...]:
    """The events an applied operation published; the same inputs always give the same events."""
    cause = op.meta.event_id
    if outcome == "succeeded":
        meta = EventMeta(derive_id("PaymentSucceeded", payment.payment_id), at, payment.correlation_id, cause)
        return (PaymentSucceeded(meta, payment.payment_id, payment.user_id, payment.money, payment.method),)
    if outcome == "failed":
        return (_failed(payment, cause, at),)
    if outcome.startswith("inconsistent:"):
        status = outcome.split(":", 1)[1]
        meta = EventMeta(derive_id("PaymentOperationInconsistent", op.operation_id), at, payment.correlation_id, cause)
        reason = (
            f"{op.kind} {op.status} from {op.source} arrived for a payment that is {status}"
            if op.operation_id == payment.charge_operation_id
            else f"operation {op.operation_id} is not one this payment asked for"
        )
        return (
            PaymentOperationInconsistent(
                meta,
                payment.payment_id,
                op.operation_id,
                op.kind,
                op.status,
                op.amount,
                op.source,
                op.reference,
                status,
                reason,
            ),
        )
    if outcome == "refunded":
        refund = next(r for r in payment.refunds.values() if r.operation_id == op.operation_id)
        meta = EventMeta(derive_id("PaymentRefunded", refund.refund_id), at, payment.correlation_id, cause)
        status = "refunded" if refund.refunded_total_after >= payment.amount else "partially_refunded"
        return (
            PaymentRefunded(
                meta,
                payment.payment_id,
                refund.refund_id,
                Money(refund.amount, payment.currency),
                Money(refund.refunded_total_after, payment.currency),
                status,
            ),
        )
    return ()


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
    return Decision(None, (), (ProviderRefund(op_id, payment.payment_id, payment.provider, reference, payment.money),))


def decide_refund(payment: Payment | None, event: RefundRequested) -> Decision:
    if payment is None:
        return Decision(None, rejection=("unknown_payment", f"payment {event.payment_id} not found"))
    seen = payment.refunds.get(event.refund_id)
    if seen is not None:
        return Decision(None, (), (_refund_request(payment, seen),) if seen.status == "pending" else ())
    if payment.status not in REFUNDABLE:
        return Decision(None, rejection=("not_refundable", f"payment is {payment.status}"))
    if event.amount.currency != payment.currency:
        return Decision(None, rejection=("currency_mismatch", f"payment currency is {payment.currency}"))
    if event.amount.amount <= 0:
        return Decision(None, rejection=("invalid_amount", "refund amount must be positive"))
    if event.amount.amount > payment.amount - payment.reserved():
        left = payment.amount - payment.reserved()
        return Decision(None, rejection=("exceeds_refundable", f"only {left} {payment.currency} can be refunded"))
    refund = Refund(
        event.refund_id,
        refund_operation_id(event.refund_id),
        event.amount.amount,
        "pending",
        event.reason,
        actor_subject=event.meta.actor_subject,
        actor_roles=event.meta.actor_roles,
    )
    state = replace(payment, refunds={**payment.refunds, refund.refund_id: refund})
    return Decision(state, (), (_refund_request(state, refund),))


def _refund_request(payment: Payment, refund: Refund) -> Effect:
    money = Money(refund.amount, payment.currency)
    if payment.method == "wallet":
        assert payment.wallet_id is not None
        # A full refund reverts the debit (the wallet links them); a partial one is a plain income.
        whole = refund.amount == payment.amount and len(payment.refunds) == 1
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
    return ProviderRefund(refund.operation_id, payment.payment_id, payment.provider, payment.charge_reference, money)


def overdue(payment: Payment, now: int) -> PaymentOperationCompleted | None:
    """The deadline's failed operation for a payment still waiting on the provider past it."""
    if payment.status != "processing" or payment.deadline_at is None or now < payment.deadline_at:
        return None
    op_id = deadline_operation_id(payment.payment_id)
    if op_id in payment.operations:
        return None
    meta = EventMeta(derive_id("PaymentOperationCompleted", op_id), now, payment.correlation_id, None)
    return PaymentOperationCompleted(
        meta,
        payment.payment_id,
        op_id,
        "charge",
        "failed",
        payment.money,
        "deadline",
        None,
        "provider_timeout",
        "no answer from the provider before the deadline",
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
