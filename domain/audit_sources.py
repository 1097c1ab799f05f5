"""The auditor's own check that money entering a wallet has a named, allowed source.

It uses only how sources and ids are named (domain.money_sources, domain.payment, domain.wallet),
never the wallet's decision: an applied income must name the source its ids say it is, be
given by an actor whose roles may give that source, and, for a payment's money, give back no
more than that payment's debit in the same wallet took (read earlier: the debit and what it
gives back share the wallet's partition). It also counts how much money entered, per source,
actor and currency.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from domain.access import ADMIN, OPERATOR, USER
from domain.audit_books import Event, Movement, PaymentBook
from domain.money_sources import OPENING, OPERATOR_MOVEMENT, PAYMENT_COMPENSATION, PAYMENT_REFUND, payment_debit_id
from domain.payment import compensation_operation_id
from domain.wallet import opening_movement_id

# Who may give each source (the wallet checks the payer of a compensation owns the wallet).
ALLOWED_ROLES = {
    OPENING: frozenset({OPERATOR, ADMIN}),
    OPERATOR_MOVEMENT: frozenset({OPERATOR, ADMIN}),
    PAYMENT_REFUND: frozenset({OPERATOR, ADMIN}),
    PAYMENT_COMPENSATION: frozenset({USER, OPERATOR, ADMIN}),
}
UNNAMED = "(none)"


def source_of(event: Event) -> str:
    """The source an income is, from its ids."""
    payment_id = event["payment_id"]
    if event["movement_id"] == opening_movement_id(event["wallet_id"]):
        return OPENING
    if payment_id is None:
        return OPERATOR_MOVEMENT
    return PAYMENT_COMPENSATION if event["movement_id"] == compensation_operation_id(payment_id) else PAYMENT_REFUND


@dataclass
class MoneySources:
    # (source as stated, actor subject, currency) -> minor units entered, and how many incomes
    entered: dict[tuple[str, str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))

    def admit(self, event: Event, movement: Movement, payment: PaymentBook | None) -> str | None:
        """Count an applied income; what is wrong with its source, or None. `payment` is the book
        of the payment the income names (what its debit took, what it has given back)."""
        envelope = event["envelope"]
        stated, actor = event.get("source"), envelope.get("actor_subject")
        tally = self.entered[(stated or UNNAMED, actor or UNNAMED, movement.currency)]
        tally[0] += movement.delta
        tally[1] += 1
        what = f"income {movement.movement_id} of {movement.delta} {movement.currency}"
        expected = source_of(event)
        if stated != expected:
            return f"{what} names source {stated or 'none'}, but its ids make it {expected}"
        roles = frozenset(envelope.get("actor_roles") or ())
        if actor is None or not roles & ALLOWED_ROLES[expected]:
            who = f"{actor} ({', '.join(sorted(roles)) or 'no role'})" if actor else "no actor"
            return f"{what}: {who} may not give {expected}"
        if expected in (PAYMENT_REFUND, PAYMENT_COMPENSATION):
            return self._backing_problem(what, movement, payment)
        return None

    @staticmethod
    def _backing_problem(what: str, movement: Movement, payment: PaymentBook | None) -> str | None:
        payment_id = movement.payment_id
        assert payment_id is not None
        debit = payment.movements.get(payment_debit_id(payment_id)) if payment is not None else None
        if payment is None or debit is None or debit.wallet_id != movement.wallet_id or debit.delta >= 0:
            return f"{what} gives back money payment {payment_id} never took from wallet {movement.wallet_id}"
        payment.given_back += movement.delta
        if payment.given_back > -debit.delta:
            return f"{what}: payment {payment_id} took {-debit.delta}, has given back {payment.given_back}"
        return None

    def per_source(self) -> dict[tuple[str, str], int]:
        """(source, currency) -> minor units entered, whoever gave them."""
        totals: dict[tuple[str, str], int] = defaultdict(int)
        for (source, _, currency), (amount, _) in self.entered.items():
            totals[(source, currency)] += amount
        return dict(totals)

    def figures(self) -> list[dict[str, object]]:
        return [
            {"source": source, "actor": actor, "currency": currency, "amount": amount, "incomes": count}
            for (source, actor, currency), (amount, count) in sorted(self.entered.items())
        ]
