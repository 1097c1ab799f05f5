"""Which payments of this worker wait on the provider, and until when."""

from __future__ import annotations

from domain import payment as domain
from streams.ports import DeletableTable


class DeadlineIndex:
    """Payments of this worker waiting on the provider (a charge or a refund), by their earliest
    deadline, so the 1 s sweep looks at those alone.

    Kept in memory and in its own table (`open_payments`: payment id -> earliest deadline),
    which holds only the payments still waiting and so stays small whatever the history: the
    index is rebuilt from that table after a rebalance and every REBUILD_S (in case one came and
    went between two sweeps), never by reading every payment ever made."""

    REBUILD_S = 30.0

    def __init__(self, open_payments: DeletableTable) -> None:
        self.open_payments = open_payments
        self.due_at: dict[str, int] = {}
        self.built_at = float("-inf")

    def track(self, payment: domain.Payment, rewrite: bool = False) -> None:
        """Written in the same step as the payment (same partition, same batch); `rewrite` writes
        the entry even if the table already holds it (see PaymentSteps.apply)."""
        payment_id, due = payment.payment_id, payment.next_deadline()
        if due is not None:
            self.due_at[payment_id] = due
            if rewrite or self.open_payments.get(payment_id) != due:
                self.open_payments[payment_id] = due
        else:
            self.due_at.pop(payment_id, None)
            if self.open_payments.get(payment_id) is not None:
                del self.open_payments[payment_id]

    def rebuild_if_stale(self, now: float) -> None:
        if now - self.built_at >= self.REBUILD_S:
            self.due_at = {payment_id: due for payment_id, due in list(self.open_payments.items()) if due is not None}
            self.built_at = now

    def overdue(self, now_millis: int) -> list[str]:
        return [payment_id for payment_id, due in self.due_at.items() if due <= now_millis]
