"""The money auditor's books: where an event is, what a violation says, and what the ledger
keeps per wallet and per payment (see domain.audit for the invariants)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]

INVARIANTS = (
    "balance_never_negative",
    "balance_equals_movements",
    "currency_totals",
    "payment_matches_movements",
    "provider_matches_payment",
    "money_has_a_source",
)


@dataclass(frozen=True)
class At:
    """Where an event is on the log."""

    topic: str
    partition: int
    offset: int


@dataclass
class Violation:
    invariant: str
    subject: str  # the wallet, payment or currency it is about
    message: str
    at: At
    cleared: bool = False


@dataclass(frozen=True)
class Movement:
    movement_id: str
    wallet_id: str
    delta: int
    currency: str
    version: int
    balance_after: int
    payment_id: str | None
    at: At


@dataclass
class WalletBook:
    currency: str = ""
    versions: dict[int, Movement] = field(default_factory=dict)
    balance: tuple[int, int, At] | None = None  # (version, amount, where) of the latest update
    unmatched: dict[int, tuple[int, At]] = field(default_factory=dict)  # updates whose movement is not read yet
    last_news: float = 0.0
    gap_reported: bool = False
    # (balance, versions read) -> this wallet's figures: recomputed only when either moved,
    # so judging the books costs a pass over the wallets, not over their whole history.
    figures: tuple[Any, dict[str, int] | None] | None = None


@dataclass
class PaymentBook:
    created: Event | None = None
    succeeded: bool = False
    failed: bool = False
    refunded_total: int = 0
    refunds_requested: dict[str, int] = field(default_factory=dict)  # refund id -> amount
    refunds_settled: set[str] = field(default_factory=set)
    operations: dict[str, Event] = field(default_factory=dict)  # first completion per operation id
    flagged: set[str] = field(default_factory=set)  # operation ids the saga called inconsistent
    movements: dict[str, Movement] = field(default_factory=dict)  # its own and reverts of them
    last_at: At | None = None
    last_occurred: Any = None  # the envelope's occurred_at of the event at last_at
    last_news: float = 0.0
    judged: bool = False
    open: dict[str, Violation] = field(default_factory=dict)  # invariant -> open violation
