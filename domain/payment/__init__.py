"""The payment aggregate: one payment, the operations applied to it, its refunds.

State lives in the payment worker's table, keyed by payment id (one writer per
partition). Every id is derived from what caused it, so a redelivered event names
the same debit, charge, refund or compensation, and the wallet or the provider
applies it once. An operation id already applied re-emits the same outcome events
(same ids, same timestamps) instead of deciding again: a crash between the table
write and the publish loses nothing. Every event the saga decides acts for whoever
created the payment (its actor), stamped here.

`model` holds the vocabulary (ids, events, effects, state), `decisions` the saga's decisions,
`outcomes` the events an applied operation publishes, `operations` what arrives from outside.
"""

from domain.payment.decisions import decide_compensation, decide_created, decide_operation, decide_refund
from domain.payment.model import (
    REFUND_ENDINGS,
    REFUNDABLE,
    SAGA_ENDINGS,
    TERMINAL_STATUSES,
    Applied,
    Decision,
    Effect,
    Method,
    Outcome,
    Payment,
    PaymentEvent,
    PaymentFailed,
    PaymentOperationCompleted,
    PaymentOperationInconsistent,
    PaymentRefunded,
    PaymentSucceeded,
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
    from_dict,
    provider_operation_id,
    refund_deadline_operation_id,
    refund_operation_id,
    to_dict,
)
from domain.payment.operations import (
    effect_kind,
    operation_from_movement,
    operation_from_provider,
    overdue,
    overdue_operations,
    refused_by_provider,
)

__all__ = [
    "REFUNDABLE",
    "REFUND_ENDINGS",
    "SAGA_ENDINGS",
    "TERMINAL_STATUSES",
    "Applied",
    "Decision",
    "Effect",
    "Method",
    "Outcome",
    "Payment",
    "PaymentEvent",
    "PaymentFailed",
    "PaymentOperationCompleted",
    "PaymentOperationInconsistent",
    "PaymentRefunded",
    "PaymentSucceeded",
    "ProviderCharge",
    "ProviderRefund",
    "Refund",
    "RefundFailed",
    "RefundRequested",
    "RequestPayment",
    "Status",
    "WalletMovement",
    "charge_operation_id",
    "compensation_operation_id",
    "deadline_operation_id",
    "decide_compensation",
    "decide_created",
    "decide_operation",
    "decide_refund",
    "effect_kind",
    "from_dict",
    "operation_from_movement",
    "operation_from_provider",
    "overdue",
    "overdue_operations",
    "provider_operation_id",
    "refund_deadline_operation_id",
    "refund_operation_id",
    "refused_by_provider",
    "to_dict",
]
