"""The wallets the auditor's ledger knows, of which only some are in memory.

Every wallet's running figures are kept in the auditor's store; memory holds the wallets
changed since the last checkpoint took them (`dirty`), those with a missing version not
reported yet (`gapped`: the gap is judged after a grace period, so they must stay), and the
most recently used others, up to the number the auditor keeps (`forget`). A wallet not in
memory is read back from the store before an event about it is added (`missing`, `restore`).

What judging needs from all wallets is kept as running sums instead of a pass over them: each
currency's figures over the wallets whose history is complete, each wallet's share updated
when it changes (`recount`), and the coordinates of the latest balance update.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from domain.audit_books import FIGURE_KINDS, At, WalletBook
from domain.wallet import opening_movement_id

Share = tuple[str, dict[str, int]]  # a complete wallet's currency and its figures


def _later(a: At | None, b: At) -> At:
    return b if a is None or (b.topic, b.partition, b.offset) > (a.topic, a.partition, a.offset) else a


class Wallets:
    def __init__(self) -> None:
        self.resident: dict[str, WalletBook] = {}  # least recently used first
        self.shares: dict[str, Share | None] = {}  # each resident wallet's share counted in `totals`
        self.dirty: set[str] = set()  # changed since the last checkpoint took them
        self.touched: set[str] = set()  # changed since their share was counted
        self.gapped: set[str] = set()  # a missing version not reported yet: judged, so kept
        # currency -> [complete wallets, balances, openings, incomes, expenses]
        self.totals: dict[str, list[int]] = {}
        self.latest_balance_at: At | None = None

    def __contains__(self, wallet_id: object) -> bool:
        return wallet_id in self.resident

    def __len__(self) -> int:
        return len(self.resident)

    def get(self, wallet_id: str) -> WalletBook | None:
        return self.resident.get(wallet_id)

    def __getitem__(self, wallet_id: str) -> WalletBook:
        return self.resident[wallet_id]

    def items(self) -> Iterator[tuple[str, WalletBook]]:
        return iter(self.resident.items())

    # ------------------------------------------------------------ reading and changing

    def touch(self, wallet_id: str) -> WalletBook:
        """The book an event changes: most recently used now, and to be written and recounted.
        A wallet not in memory is new: the auditor restores stored ones before adding events."""
        book = self.resident.pop(wallet_id, None)
        if book is None:
            book = WalletBook(opening_id=opening_movement_id(wallet_id))
            self.shares[wallet_id] = None
        self.resident[wallet_id] = book
        self.dirty.add(wallet_id)
        self.touched.add(wallet_id)
        return book

    def balance_read(self, at: At) -> None:
        self.latest_balance_at = _later(self.latest_balance_at, at)

    def missing(self, wallet_ids: Iterable[str]) -> list[str]:
        return sorted({w for w in wallet_ids if w not in self.resident})

    def restore(self, asked: Iterable[str], stored: dict[str, WalletBook]) -> None:
        """Books read back from the store; an asked wallet the store does not have is new. A
        stored book's share is already in `totals` (they were written together)."""
        for wallet_id in asked:
            if wallet_id in self.resident:
                continue
            book = stored.get(wallet_id)
            if book is None:
                self.resident[wallet_id] = WalletBook(opening_id=opening_movement_id(wallet_id))
                self.shares[wallet_id] = None
            else:
                book.opening_id = opening_movement_id(wallet_id)
                self.resident[wallet_id], self.shares[wallet_id] = book, self._share(book)

    def adopt(self, wallet_id: str, book: WalletBook) -> None:
        """A book not in the store nor counted yet (a state of the format that held every wallet)."""
        book.opening_id = opening_movement_id(wallet_id)
        self.resident[wallet_id], self.shares[wallet_id] = book, None
        self.dirty.add(wallet_id)
        self.touched.add(wallet_id)
        if book.balance is not None:
            self.balance_read(book.balance[2])

    # ------------------------------------------------------------ running sums

    @staticmethod
    def _share(book: WalletBook) -> Share | None:
        own = book.own_figures(book.opening_id)
        return None if own is None else (book.currency, dict(own))

    def _count(self, share: Share | None, sign: int) -> None:
        if share is None:
            return
        currency, figures = share
        row = self.totals.setdefault(currency, [0] * (2 + len(FIGURE_KINDS)))
        row[0] += sign
        for n, kind in enumerate(("balances", *FIGURE_KINDS), start=1):
            row[n] += sign * figures[kind]
        if row[0] == 0:
            del self.totals[currency]

    def recount(self) -> None:
        """Bring the sums up to date with the wallets changed since the last recount."""
        for wallet_id in self.touched:
            book = self.resident[wallet_id]
            share = self._share(book)
            if share != self.shares.get(wallet_id):
                self._count(self.shares.get(wallet_id), -1)
                self._count(share, +1)
                self.shares[wallet_id] = share
            if book.gap_reported or book.unbroken():
                self.gapped.discard(wallet_id)
            else:
                self.gapped.add(wallet_id)
        self.touched.clear()

    def currency_totals(self) -> dict[str, dict[str, int]]:
        self.recount()
        return {c: dict(zip(("balances", *FIGURE_KINDS), row[1:], strict=True)) for c, row in self.totals.items()}

    def gap_reported(self, wallet_id: str) -> None:
        self.resident[wallet_id].gap_reported = True
        self.gapped.discard(wallet_id)

    # ------------------------------------------------------------ checkpoints

    def take_dirty(self) -> dict[str, WalletBook]:
        """The books a checkpoint writes, counted first (the sums it writes include them); they
        are clean from now on unless changed again. `untake` them if the write fails."""
        self.recount()
        taken = {wallet_id: self.resident[wallet_id] for wallet_id in self.dirty}
        self.dirty = set()
        return taken

    def untake(self, wallet_ids: Iterable[str]) -> None:
        self.dirty.update(wallet_ids)

    def forget(self, keep: int) -> int:
        """Drop the least recently used clean wallets beyond `keep` (they are in the store);
        those changed since the last checkpoint and those with an open gap stay. How many went."""
        self.recount()
        clean = [w for w in self.resident if w not in self.dirty and w not in self.gapped]
        dropped = clean[: max(0, len(clean) - keep)]
        for wallet_id in dropped:
            del self.resident[wallet_id]
            del self.shares[wallet_id]
        return len(dropped)
