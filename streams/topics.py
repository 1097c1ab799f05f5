"""The one declaration of every Kafka topic: name, the aggregate its key is, retention.

Event topics are the event store, so they never expire (retention.ms=-1) and are
created explicitly with the configured partition count. Topics that a step joins
share that count, so one wallet (or payment) always maps to the same partition
number everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str  # the aggregate id the records are keyed by
    retention_ms: int = -1

    def config(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": "delete"}


PAYMENT_CREATED = TopicSpec("payment.created", key="payment_id")
PAYMENT_OPERATION_COMPLETED = TopicSpec("payment.payment_operation.completed", key="payment_id")
PAYMENT_OPERATION_INCONSISTENT = TopicSpec("payment.payment_operation.inconsistent", key="payment_id")
PAYMENT_SUCCESS = TopicSpec("payment.success", key="payment_id")
PAYMENT_FAILED = TopicSpec("payment.failed", key="payment_id")
PAYMENT_REFUND = TopicSpec("payment.refund", key="payment_id")
PAYMENT_REFUNDED = TopicSpec("payment.refunded", key="payment_id")
PAYMENT_REFUND_FAILED = TopicSpec("payment.refund_failed", key="payment_id")
WALLET_MOVEMENT_REQUIRED = TopicSpec("wallet.movement_required", key="wallet_id")
WALLET_MOVEMENT_UPDATES = TopicSpec("wallet.movement_updates", key="wallet_id")
WALLET_BALANCE_UPDATE = TopicSpec("wallet.balance_update", key="wallet_id")
EXTERNAL_PROVIDER_EVENTS = TopicSpec("external-provider-events", key="payment_id")
PAYMENT_DLQ = TopicSpec("payment.dlq", key="source key")

ALL_TOPICS: tuple[TopicSpec, ...] = (
    PAYMENT_CREATED,
    PAYMENT_OPERATION_COMPLETED,
    PAYMENT_OPERATION_INCONSISTENT,
    PAYMENT_SUCCESS,
    PAYMENT_FAILED,
    PAYMENT_REFUND,
    PAYMENT_REFUNDED,
    PAYMENT_REFUND_FAILED,
    WALLET_MOVEMENT_REQUIRED,
    WALLET_MOVEMENT_UPDATES,
    WALLET_BALANCE_UPDATE,
    EXTERNAL_PROVIDER_EVENTS,
    PAYMENT_DLQ,
)
