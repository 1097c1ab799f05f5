"""The payment aggregate's vocabulary: ids derived from their causes, the events (one per
Avro record), the effects a decision asks of the wallet or the provider, the state, and a
decision's shape."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal

from domain.events import EventMeta
from domain.ids import derive_id
from domain.money import Money

Method = Literal["wallet", "external"]
Status = Literal["initiated", "processing", "completed", "failed", "refunded", "partially_refunded"]
# "Terminal" has one meaning per concept, each with its own name:
# the statuses a payment's saga ends in (a refund may still move it between the last three);
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "refunded", "partially_refunded"})
# the events that end a payment's saga, with the status each leaves;
SAGA_ENDINGS: dict[str, Status] = {"PaymentSucceeded": "completed", "PaymentFailed": "failed"}
# the events that end one refund.
REFUND_ENDINGS: tuple[str, ...] = ("PaymentRefunded", "RefundFailed")
REFUNDABLE: frozenset[str] = frozenset({"completed", "partially_refunded"})


class Outcome(StrEnum):
    """What applying an operation did to a payment. Stored per operation id (as its label), so
    a redelivered operation re-emits the same events instead of deciding again."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CHARGE_MISMATCH = "charge_mismatch"
    INCONSISTENT = "inconsistent"  # money moved for a payment that could not take it
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    REFUNDED = "refunded"
    REFUND_FAILED = "refund_failed"
    REFUND_MISMATCH = "refund_mismatch"
    REFUND_RECONCILED = "refund_reconciled"
    REFUND_UNRECONCILED = "refund_unreconciled"
    IGNORED = "ignored"


@dataclass(frozen=True)
class Applied:
    """An operation's outcome; an inconsistency keeps the payment status it met."""

    outcome: Outcome
    status_then: str | None = None

    @property
    def label(self) -> str:
        """As stored in the table ("inconsistent:<status>" for an inconsistency, as ever)."""
        return f"{self.outcome}:{self.status_then}" if self.outcome is Outcome.INCONSISTENT else str(self.outcome)

    @classmethod
    def of(cls, label: str) -> Applied:
        outcome, _, status_then = label.partition(":")
        return cls(Outcome(outcome), status_then or None)


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
class RequestPayment:
    """Take this payment: a command in all but its wire name (validation can still fail it)."""

    WIRE_NAME: ClassVar[str] = "PaymentCreated"  # the Avro record name on payment.created, kept for the log
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
class PaymentOperationPending:
    """The provider accepted a charge or refund and answered with its own id for it, not yet an
    outcome (that comes by webhook). On the log so that the views and `payments trace` link our
    operation id (the idempotency key the provider got) to the provider's object, and show
    until when the saga waits for its webhook."""

    meta: EventMeta
    payment_id: str
    operation_id: str
    kind: Literal["charge", "refund"]
    amount: Money
    provider: str
    reference: str
    provider_status: str
    deadline_at: int | None


@dataclass(frozen=True)
class OperationSummary:
    """The operation that decided a payment, carried by its terminal event."""

    operation_id: str
    kind: Literal["charge", "refund"]
    status: Literal["succeeded", "failed"]
    amount: Money
    source: Literal["wallet", "provider", "deadline"]
    reference: str | None
    failure_code: str | None
    failure_reason: str | None
    occurred_at: int

    @classmethod
    def of(cls, op: PaymentOperationCompleted) -> OperationSummary:
        return cls(
            op.operation_id,
            op.kind,
            op.status,
            op.amount,
            op.source,
            op.reference,
            op.failure_code,
            op.failure_reason,
            op.meta.occurred_at,
        )


@dataclass(frozen=True)
class PaymentSucceeded:
    meta: EventMeta
    payment_id: str
    user_id: str
    amount: Money
    method: Method
    operation: OperationSummary | None = None


@dataclass(frozen=True)
class PaymentFailed:
    meta: EventMeta
    payment_id: str
    user_id: str
    amount: Money
    method: Method
    reason_code: str
    reason: str
    operation: OperationSummary | None = None


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
    # The payer: a refusal by the provider acts for whoever created the payment.
    actor_subject: str | None = None
    actor_roles: tuple[str, ...] = ()
    deadline_at: int | None = None  # the payment's: shown with the provider's pending answer


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
    actor_subject: str | None = None  # the payer, as for the charge
    actor_roles: tuple[str, ...] = ()


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
    reference: str | None = None  # the provider's id of the refund, once it answered


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


_PAYMENT_FIELDS = tuple(f.name for f in dataclasses.fields(Payment))
_REFUND_FIELDS = tuple(f.name for f in dataclasses.fields(Refund))


def to_dict(payment: Payment) -> dict[str, Any]:
    """What `dataclasses.asdict` gives, without its deep copy of every value: every field is
    immutable but the two mappings, which are copied. asdict was a fifth of a saga step's CPU."""
    values = {name: getattr(payment, name) for name in _PAYMENT_FIELDS}
    values["operations"] = dict(payment.operations)
    values["refunds"] = {
        refund_id: {name: getattr(refund, name) for name in _REFUND_FIELDS}
        for refund_id, refund in payment.refunds.items()
    }
    return values


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


def refund_of(payment: Payment, operation_id: str) -> Refund | None:
    """The refund an operation (the refund itself, or its deadline) belongs to."""
    for refund in payment.refunds.values():
        if operation_id in (refund.operation_id, refund_deadline_operation_id(refund.refund_id)):
            return refund
    return None


def meta_for(payment: Payment, event_id: str, at: int, cause: str | None) -> EventMeta:
    """The meta of an event the payment's saga decides: it acts for whoever created the payment."""
    return EventMeta(event_id, at, payment.correlation_id, cause, payment.actor_subject, payment.actor_roles)
