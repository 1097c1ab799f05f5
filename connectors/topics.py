"""The one declaration of every Kafka topic: name, the aggregate its key is, retention.

`ALL_TOPICS` is the event store; `CHANGELOG_TOPICS` are the workers' table changelogs.

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
    cleanup_policy: str = "delete"

    def config(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}


def changelog(app_id: str, table: str, key: str) -> TopicSpec:
    """A faust table's changelog: compacted (the latest value per key is the state), and created
    by the setup with the source topics' partition count before any worker consumes; a worker
    that started before its changelog was in the metadata failed every table write."""
    return TopicSpec(f"{app_id}-{table}-changelog", key=key, cleanup_policy="compact")


PAYMENT_CREATED = TopicSpec("payment.created", key="payment_id")
PAYMENT_OPERATION_COMPLETED = TopicSpec("payment.payment_operation.completed", key="payment_id")
PAYMENT_OPERATION_INCONSISTENT = TopicSpec("payment.payment_operation.inconsistent", key="payment_id")
PAYMENT_SUCCEEDED = TopicSpec("payment.success", key="payment_id")
PAYMENT_FAILED = TopicSpec("payment.failed", key="payment_id")
PAYMENT_REFUND_REQUESTED = TopicSpec("payment.refund", key="payment_id")
PAYMENT_REFUNDED = TopicSpec("payment.refunded", key="payment_id")
PAYMENT_REFUND_FAILED = TopicSpec("payment.refund_failed", key="payment_id")
WALLET_MOVEMENT_REQUIRED = TopicSpec("wallet.movement_required", key="wallet_id")
WALLET_MOVEMENT_UPDATES = TopicSpec("wallet.movement_updates", key="wallet_id")
WALLET_BALANCE_UPDATE = TopicSpec("wallet.balance_update", key="wallet_id")
# A payment's movement outcome as its payment operation, keyed by payment: the payment worker
# decides on it where it lands (no re-keying hop), and only the wallet worker writes it.
WALLET_PAYMENT_OPERATIONS = TopicSpec("wallet.payment_operation.completed", key="payment_id")
EXTERNAL_PROVIDER_EVENTS = TopicSpec("external-provider-events", key="payment_id")
PAYMENT_DLQ = TopicSpec("payment.dlq", key="source key")

WALLET_WORKER = "wallet-worker"
PAYMENT_WORKER = "payment-worker"
WALLETS_CHANGELOG = changelog(WALLET_WORKER, "wallets", key="wallet_id")
MOVEMENTS_CHANGELOG = changelog(WALLET_WORKER, "movements", key="movement_id")
PAYMENTS_CHANGELOG = changelog(PAYMENT_WORKER, "payments", key="payment_id")
# Only the payments still waiting on a provider, so a restart or a sweep never reads every payment.
OPEN_PAYMENTS_CHANGELOG = changelog(PAYMENT_WORKER, "open_payments", key="payment_id")

ALL_TOPICS: tuple[TopicSpec, ...] = (
    PAYMENT_CREATED,
    PAYMENT_OPERATION_COMPLETED,
    PAYMENT_OPERATION_INCONSISTENT,
    PAYMENT_SUCCEEDED,
    PAYMENT_FAILED,
    PAYMENT_REFUND_REQUESTED,
    PAYMENT_REFUNDED,
    PAYMENT_REFUND_FAILED,
    WALLET_MOVEMENT_REQUIRED,
    WALLET_MOVEMENT_UPDATES,
    WALLET_BALANCE_UPDATE,
    WALLET_PAYMENT_OPERATIONS,
    EXTERNAL_PROVIDER_EVENTS,
    PAYMENT_DLQ,
)
CHANGELOG_TOPICS: tuple[TopicSpec, ...] = (
    WALLETS_CHANGELOG,
    MOVEMENTS_CHANGELOG,
    PAYMENTS_CHANGELOG,
    OPEN_PAYMENTS_CHANGELOG,
)
# Everything the setup creates before a worker starts: the event store and the tables' changelogs.
DECLARED_TOPICS: tuple[TopicSpec, ...] = ALL_TOPICS + CHANGELOG_TOPICS
