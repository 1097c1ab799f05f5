"""Which payments of this worker wait on the provider, and until when."""

from __future__ import annotations

from domain import payment as domain
from streams.ports import Table


class DeadlineIndex:
    """Payments of this worker waiting on the provider (a charge or a refund), by their
    earliest deadline, so the 1 s sweep looks at those alone instead of the whole table.
    Rebuilt from the table after a rebalance and every REBUILD_S in case one came and went
    between two sweeps."""

    REBUILD_S = 30.0

    def __init__(self) -> None:
        self.due_at: dict[str, int] = {}
        self.built_at = float("-inf")

    def track(self, payment: domain.Payment) -> None:
        due = payment.next_deadline()
        if due is not None:
            self.due_at[payment.payment_id] = due
        else:
            self.due_at.pop(payment.payment_id, None)

    def rebuild_if_stale(self, payments: Table, now: float) -> None:
        if now - self.built_at >= self.REBUILD_S:
            self.due_at.clear()
            for _, raw in list(payments.items()):
                # Decoding every settled payment would stall the loop on a large table: only
                # those that may still wait on something.
                if raw and (
                    raw["status"] == "processing" or any(r["status"] == "pending" for r in raw["refunds"].values())
                ):
                    self.track(domain.from_dict(raw))
            self.built_at = now

    def overdue(self, now_millis: int) -> list[str]:
        return [payment_id for payment_id, due in self.due_at.items() if due <= now_millis]
