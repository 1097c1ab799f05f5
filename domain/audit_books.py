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
    number: int = 0  # the ledger's count when it was found: stays the same across a checkpoint


@dataclass(frozen=True, slots=True)
class Movement:
    movement_id: str
    wallet_id: str
    delta: int
    currency: str
    version: int
    balance_after: int
    payment_id: str | None
    at: At


# Figures of the movements of one wallet: an opening, incomes, expenses (minor units).
FIGURE_KINDS = ("openings", "incomes", "expenses")
# Folded movements still kept per wallet: a redelivery of one of them is recognised by its id.
KEPT_FOLDED = 4


@dataclass
class WalletBook:
    """One wallet's running figures. Versions 1..folded are summed into `folded_figures` (and
    `folded_balance` is what v`folded` left); `versions` holds the later ones and, to recognise a
    redelivered movement or the owner of a revert, the last KEPT_FOLDED folded ones."""

    currency: str = ""
    versions: dict[int, Movement] = field(default_factory=dict)
    folded: int = 0
    folded_balance: int = 0
    folded_figures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIGURE_KINDS, 0))
    balance: tuple[int, int, At] | None = None  # (version, amount, where) of the latest update
    unmatched: dict[int, tuple[int, At]] = field(default_factory=dict)  # updates whose movement is not read yet
    last_news: float = 0.0
    gap_reported: bool = False
    # (balance, folded, versions kept) -> this wallet's figures: recomputed only when one moved,
    # so judging the books costs a pass over the wallets, not over their whole history.
    figures: tuple[Any, dict[str, int] | None] | None = None
    # Its opening movement's id (derived from the wallet id, a hash): set when the book is
    # made or read back, as every fold needs it.
    opening_id: str = ""

    def balance_at(self, version: int) -> int | None:
        """What the movement at `version` left, if the books still know."""
        if version == 0:
            return 0
        if version in self.versions:
            return self.versions[version].balance_after
        return self.folded_balance if version == self.folded else None

    def forgotten(self, version: int) -> bool:
        """Folded and no longer kept: a movement or update at it can no longer be compared."""
        return 0 < version <= self.folded and version not in self.versions

    def fold(self, opening_id: str) -> None:
        """Sum the versions whose movement and whose balance update were both read, in order:
        no later event can change what they say (a redelivery repeats them)."""
        upto = self.balance[0] if self.balance is not None else 0
        while self.folded < upto and self.folded + 1 in self.versions:
            movement = self.versions[self.folded + 1]
            self.folded_figures[figure_kind(movement, opening_id)] += abs(movement.delta)
            self.folded, self.folded_balance = movement.version, movement.balance_after
        for version in [v for v in self.versions if v <= self.folded - KEPT_FOLDED]:
            del self.versions[version]

    def unbroken(self) -> bool:
        later = [v for v in self.versions if v > self.folded]
        return not later or max(later) - self.folded == len(later)

    def gap(self) -> tuple[int, At] | None:
        """The first missing version before a later one, and where that later one is."""
        for version in sorted(v for v in self.versions if v > self.folded):
            if version - 1 > self.folded and version - 1 not in self.versions:
                return version - 1, self.versions[version].at
        return None

    def own_figures(self, opening_id: str) -> dict[str, int] | None:
        """This wallet's share of its currency's figures, or None while its history up to its
        latest balance is incomplete; kept until the wallet reads something new."""
        key = (self.balance, self.folded, len(self.versions))
        if self.figures is not None and self.figures[0] == key:
            return self.figures[1]
        own: dict[str, int] | None = None
        latest = self.balance[0] if self.balance is not None else None
        if (
            latest is not None
            and latest >= self.folded
            and all(v in self.versions for v in range(self.folded + 1, latest + 1))
        ):
            own = {"balances": self.balance[1] if self.balance else 0, **self.folded_figures}
            for version in range(self.folded + 1, latest + 1):
                movement = self.versions[version]
                own[figure_kind(movement, opening_id)] += abs(movement.delta)
        self.figures = (key, own)
        return own


def figure_kind(movement: Movement, opening_id: str) -> str:
    return "openings" if movement.movement_id == opening_id else "incomes" if movement.delta > 0 else "expenses"


@dataclass
class PaymentBook:
    created: Event | None = None  # only its method and amount are read
    succeeded: bool = False
    failed: bool = False
    refunded_total: int = 0
    refunds_requested: dict[str, int] = field(default_factory=dict)  # refund id -> amount
    refunds_settled: set[str] = field(default_factory=set)
    # First completion per operation id (its kind, source, status and amount are read).
    operations: dict[str, Event] = field(default_factory=dict)
    flagged: set[str] = field(default_factory=set)  # operation ids the saga called inconsistent
    movements: dict[str, Movement] = field(default_factory=dict)  # its own and reverts of them
    last_at: At | None = None
    last_occurred: Any = None  # the envelope's occurred_at of the event at last_at
    last_news: float = 0.0
    judged: bool = False
    open: dict[str, Violation] = field(default_factory=dict)  # invariant -> open violation
    given_back: int = 0  # minor units its refunds and compensation gave back to the payer's wallet
