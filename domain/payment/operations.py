"""Operations that arrive from outside a decision: a wallet movement's outcome, a provider's
update, a provider's refusal, and the failures a passed deadline stands for."""

from __future__ import annotations

from typing import Literal

from domain.events import EventMeta
from domain.ids import derive_id
from domain.money import Money
from domain.payment.model import (
    Payment,
    PaymentOperationCompleted,
    PaymentOperationPending,
    ProviderCharge,
    ProviderRefund,
    deadline_operation_id,
    meta_for,
    provider_operation_id,
    refund_deadline_operation_id,
)


def overdue(payment: Payment, now: int) -> PaymentOperationCompleted | None:
    """The deadline's failed operation for a payment still waiting on the provider past it."""
    if payment.status != "processing" or payment.deadline_at is None or now < payment.deadline_at:
        return None
    op_id = deadline_operation_id(payment.payment_id)
    if op_id in payment.operations:
        return None
    reason = "no answer from the provider before the deadline"
    return _deadline_passed(payment, op_id, "charge", payment.money, now, reason, payment.charge_reference)


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
            refund.reference,
        )
        for refund in payment.refunds.values()
        if refund.status == "pending"
        and refund.deadline_at is not None
        and now >= refund.deadline_at
        and refund_deadline_operation_id(refund.refund_id) not in payment.operations
    )
    return ((charge,) if charge is not None else ()) + refunds


def _deadline_passed(
    payment: Payment,
    op_id: str,
    kind: Literal["charge", "refund"],
    amount: Money,
    now: int,
    reason: str,
    reference: str | None,
) -> PaymentOperationCompleted:
    """The failure a passed deadline stands for, naming the provider's object it gave up on
    (`reference`, from its pending answer), so the failed operation still leads to it."""
    meta = meta_for(payment, derive_id("PaymentOperationCompleted", op_id), now, None)
    return PaymentOperationCompleted(
        meta, payment.payment_id, op_id, kind, "failed", amount, "deadline", reference, "provider_timeout", reason
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
    # The movement acted for whoever the saga acted for; so does its operation.
    op_meta = EventMeta(
        derive_id("PaymentOperationCompleted", movement_id),
        meta.occurred_at,
        meta.correlation_id,
        meta.event_id,
        meta.actor_subject,
        meta.actor_roles,
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
    acting_for: Payment | None = None,
) -> PaymentOperationCompleted | None:
    """A provider update as an operation; None while the provider says pending.

    The operation id is our idempotency key the provider echoes (else its object id),
    so duplicate and out-of-order deliveries about one charge are one operation. The provider
    is no principal: the operation acts for whoever created the payment (`acting_for`).
    """
    if status not in ("succeeded", "failed"):
        return None
    op_id = operation_id or provider_operation_id(provider, provider_reference)
    actor = (acting_for.actor_subject, acting_for.actor_roles) if acting_for else (meta.actor_subject, meta.actor_roles)
    op_meta = EventMeta(
        derive_id("PaymentOperationCompleted", op_id), meta.occurred_at, meta.correlation_id, meta.event_id, *actor
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


def refused_by_provider(
    effect: ProviderCharge | ProviderRefund, message: str, now: int, decline_code: str | None = None
) -> PaymentOperationCompleted:
    """A refusal is final: it becomes the operation's failed outcome, like a decline by webhook.
    A card declined while the charge was confirmed fails with the provider's code, as its
    webhook would; any other refusal is provider_rejected."""
    return PaymentOperationCompleted(
        _answer_meta(effect, "PaymentOperationCompleted", now),
        effect.payment_id,
        effect.operation_id,
        effect_kind(effect),
        "failed",
        effect.amount,
        "provider",
        None,
        decline_code or "provider_rejected",
        message[:500],
    )


def accepted_by_provider(
    effect: ProviderCharge | ProviderRefund, reference: str, provider_status: str, now: int
) -> PaymentOperationPending:
    """The provider's answer to our request: its id for the object, under our operation id.
    Named after the operation, so a request made again (a redelivery) gives the same event."""
    return PaymentOperationPending(
        _answer_meta(effect, "PaymentOperationPending", now),
        effect.payment_id,
        effect.operation_id,
        effect_kind(effect),
        effect.amount,
        effect.provider,
        reference,
        provider_status,
        effect.deadline_at,
    )


def _answer_meta(effect: ProviderCharge | ProviderRefund, event_type: str, now: int) -> EventMeta:
    """The provider answered a request of the payment's saga: the event acts for whoever the
    request acted for, and is named after the operation."""
    return EventMeta(
        derive_id(event_type, effect.operation_id),
        now,
        effect.payment_id,
        None,
        effect.actor_subject,
        effect.actor_roles,
    )


def effect_kind(effect: ProviderCharge | ProviderRefund) -> Literal["charge", "refund"]:
    return "charge" if isinstance(effect, ProviderCharge) else "refund"
