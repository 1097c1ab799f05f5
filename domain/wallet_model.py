"""The wallet aggregate's vocabulary: its state records, the commands it decides and the
events it publishes (the decisions are in domain.wallet, which re-exports all of these)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from domain.access import Principal
from domain.events import EventMeta
from domain.money import Money

MovementType = Literal["income", "expense"]


@dataclass(frozen=True)
class Wallet:
    wallet_id: str
    user_id: str
    currency: str
    balance: int
    version: int


@dataclass(frozen=True)
class MovementRecord:
    movement_id: str
    wallet_id: str
    type: MovementType
    amount: int
    currency: str
    status: Literal["applied", "rejected"]
    reason_code: str | None
    reason: str | None
    balance_after: int
    wallet_version: int
    reverts_movement_id: str | None
    reference: str | None
    description: str | None
    payment_id: str | None
    recorded_at: int
    correlation_id: str
    causation_id: str | None
    reverted_by: str | None = None
    source: str | None = None  # an income's money source (domain.money_sources)
    returned: int = 0  # a payment debit: what its refunds and compensation have given back


# ---------------------------------------------------------------- commands


@dataclass(frozen=True)
class OpenWallet:
    command_id: str
    wallet_id: str
    user_id: str
    currency: str
    opening_balance: int
    correlation_id: str
    actor: Principal | None = None  # who asked (None: refused); the wallet's opening events act for them


@dataclass(frozen=True)
class RequireMovement:
    command_id: str
    movement_id: str
    wallet_id: str
    type: MovementType
    amount: Money
    correlation_id: str
    reference: str | None = None
    description: str | None = None
    reverts_movement_id: str | None = None
    payment_id: str | None = None
    actor: Principal | None = None  # None: refused (actor_missing)
    opening: bool = False  # the opening balance's deposit, made by open_wallet itself


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class WalletOpened:
    meta: EventMeta
    wallet_id: str
    user_id: str
    currency: str
    status: Literal["applied", "rejected"]
    reason_code: str | None
    reason: str | None


@dataclass(frozen=True)
class MovementUpdated:
    meta: EventMeta
    movement_id: str
    wallet_id: str
    type: MovementType
    amount: Money
    status: Literal["applied", "rejected"]
    reason_code: str | None
    reason: str | None
    balance_after: int
    wallet_version: int
    reverts_movement_id: str | None
    reference: str | None
    description: str | None
    payment_id: str | None
    source: str | None = None  # where an income's money comes from (domain.money_sources)


@dataclass(frozen=True)
class BalanceUpdated:
    meta: EventMeta
    wallet_id: str
    user_id: str
    balance: Money
    version: int
    movement_id: str | None


WalletEvent = WalletOpened | MovementUpdated | BalanceUpdated


@dataclass(frozen=True)
class Decision:
    """What to persist (new wallet state, movement records) and what to publish."""

    wallet: Wallet | None
    records: tuple[MovementRecord, ...]
    events: tuple[WalletEvent, ...]


MovementLookup = Callable[[str], "MovementRecord | None"]
