"""Who may do what: pure decisions from a principal (subject + roles) and a resource's owner.

A user acts only on their own wallets and payments; an operator moves money and refunds
for anyone; an admin may do everything. Another user's resource is reported as absent
(HIDDEN -> 404) rather than forbidden, so ids do not leak.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

USER, OPERATOR, ADMIN = "user", "operator", "admin"
ROLES = frozenset({USER, OPERATOR, ADMIN})


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str]

    @property
    def privileged(self) -> bool:
        """Operators and admins act on anyone's resources."""
        return bool(self.roles & {OPERATOR, ADMIN})


class Action(enum.Enum):
    OPEN_WALLET = "open_wallet"
    READ_WALLET = "read_wallet"
    CREATE_MOVEMENT = "create_movement"
    REVERT_MOVEMENT = "revert_movement"
    CREATE_PAYMENT = "create_payment"
    READ_PAYMENT = "read_payment"
    REFUND_PAYMENT = "refund_payment"


# The roles that may attempt each action at all; USER is further limited to what it owns.
ALLOWED: dict[Action, frozenset[str]] = {
    Action.OPEN_WALLET: frozenset({USER, OPERATOR, ADMIN}),
    Action.READ_WALLET: frozenset({USER, OPERATOR, ADMIN}),
    Action.CREATE_MOVEMENT: frozenset({OPERATOR, ADMIN}),
    Action.REVERT_MOVEMENT: frozenset({OPERATOR, ADMIN}),
    # Operators fix money; paying on a user's behalf is not theirs to do.
    Action.CREATE_PAYMENT: frozenset({USER, ADMIN}),
    Action.READ_PAYMENT: frozenset({USER, OPERATOR, ADMIN}),
    Action.REFUND_PAYMENT: frozenset({OPERATOR, ADMIN}),
}


class Decision(enum.Enum):
    ALLOW = "allow"
    FORBIDDEN = "forbidden"  # 403: the role may never do this
    HIDDEN = "hidden"  # 404: someone else's resource


def may(principal: Principal, action: Action) -> bool:
    return bool(principal.roles & ALLOWED[action])


def decide(principal: Principal, action: Action, owner: str | None) -> Decision:
    """`owner` is the user id owning the resource (None when it does not exist)."""
    if not may(principal, action):
        return Decision.FORBIDDEN
    if owner is None:
        return Decision.HIDDEN
    if principal.privileged or (principal.roles & {ADMIN}) or owner == principal.subject:
        return Decision.ALLOW
    return Decision.HIDDEN


def may_debit(actor: Principal, wallet_owner: str, payment_id: str | None) -> bool:
    """The wallet worker's own check of a movement command's actor (every command names one)."""
    if actor.roles & {ADMIN, OPERATOR}:
        return True
    return USER in actor.roles and payment_id is not None and wallet_owner == actor.subject


def may_create_money(actor: Principal) -> bool:
    """Who may put money into the books by hand: an opening balance, an income outside a payment.

    Users may open wallets, but only empty ones; a payment's refunds and compensation are the
    saga's, checked against the payment's own debit (domain.money_sources)."""
    return bool(actor.roles & {ADMIN, OPERATOR})
