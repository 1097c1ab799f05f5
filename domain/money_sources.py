"""Where money that enters a wallet comes from. Every income (an opening balance included)
names its source on its MovementUpdated, and the wallet decides it only for a command whose
actor may give that source:

- `opening`: a wallet opened holding money; an operator or admin (the wallet API, the sample
  data's `setup` admin). A user opens empty wallets only.
- `operator_movement`: an income outside any payment (a manual income, the revert of a manual
  expense); an operator or admin.
- `payment_refund`: a refund of payment P credited back to its wallet; the refund's requester,
  an operator or admin.
- `payment_compensation`: the saga giving back P's debit after P failed; the payer (the
  wallet's owner) or an operator or admin.

A role string alone does not let a payment's money in: what a payment gives back must have
been taken from this very wallet by that payment's debit, and never more than it took (the
debit's record counts what came back). A command with no actor at all is refused, whatever it
asks: the APIs and the saga always name one.
"""

from __future__ import annotations

from typing import Protocol

from domain.access import Principal, may_create_money
from domain.payment.model import charge_operation_id, compensation_operation_id

OPENING = "opening"
OPERATOR_MOVEMENT = "operator_movement"
PAYMENT_REFUND = "payment_refund"
PAYMENT_COMPENSATION = "payment_compensation"
SOURCES = (OPENING, OPERATOR_MOVEMENT, PAYMENT_REFUND, PAYMENT_COMPENSATION)

# Rejection codes (the refusal is the command's outcome event: see docs/security.md).
ACTOR_MISSING = "actor_missing"
SOURCE_NOT_ALLOWED = "source_not_allowed"
NOT_BACKED = "not_backed_by_payment"

Refusal = tuple[str, str]


class Debit(Protocol):
    """What the wallet's movement record of a payment's debit says."""

    @property
    def wallet_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def amount(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def returned(self) -> int: ...


def income_source(movement_id: str, payment_id: str | None, opening: bool = False) -> str:
    """The source an income names, from what the command is (ids derived by the saga)."""
    if opening:
        return OPENING
    if payment_id is None:
        return OPERATOR_MOVEMENT
    return PAYMENT_COMPENSATION if movement_id == compensation_operation_id(payment_id) else PAYMENT_REFUND


def payment_debit_id(payment_id: str) -> str:
    """The movement id of a wallet payment's debit: what its refunds and compensation give back."""
    return charge_operation_id(payment_id, "wallet")


def missing_actor() -> Refusal:
    return ACTOR_MISSING, "the command names no actor; every command must say who asked"


def describe(actor: Principal) -> str:
    return f"{actor.subject} ({', '.join(sorted(actor.roles)) or 'no role'})"


def opening_refusal(actor: Principal, opening_balance: int) -> Refusal | None:
    if opening_balance <= 0 or may_create_money(actor):
        return None
    return SOURCE_NOT_ALLOWED, (
        f"{describe(actor)} may not open a wallet holding money; only an operator or admin gives an opening balance"
    )


def income_refusal(
    source: str, actor: Principal, owner: str, wallet_id: str, payment_id: str | None, amount: int, debit: Debit | None
) -> Refusal | None:
    """Why this income may not enter the wallet, or None."""
    if source in (OPENING, OPERATOR_MOVEMENT):
        if may_create_money(actor):
            return None
        return SOURCE_NOT_ALLOWED, f"{describe(actor)} may not create money ({source}); only an operator or admin may"
    payer = actor.subject == owner or actor.privileged
    if not (actor.privileged if source == PAYMENT_REFUND else payer):
        return SOURCE_NOT_ALLOWED, f"{describe(actor)} may not give payment money back ({source})"
    if debit is None or (debit.wallet_id, debit.type, debit.status) != (wallet_id, "expense", "applied"):
        return NOT_BACKED, f"payment {payment_id} took no money from wallet {wallet_id}, so it has none to give back"
    left = debit.amount - debit.returned
    if amount > left:
        return NOT_BACKED, (
            f"payment {payment_id} took {debit.amount} and has had {debit.returned} back: {amount} is more than the "
            f"{left} left to give back"
        )
    return None
