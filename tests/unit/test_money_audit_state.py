"""The auditor's checkpointed state: a ledger written as JSON and read back judges the same, and
only what is open stays in memory (judged payments are evicted, wallets folded, and wallets
not changed since the last checkpoint read back from the store on demand)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

from domain.audit import RECENT_CLEARED, Ledger
from domain.audit_books import KEPT_FOLDED, At
from domain.audit_state import (
    ledger_from_dict,
    ledger_to_dict,
    payment_to_dict,
    restore_payments,
    restore_wallets,
    wallet_to_dict,
)
from domain.payment import charge_operation_id, refund_operation_id
from domain.wallet import opening_movement_id
from tests.unit.test_money_audit import GRACE, Log, P, W, ev, paid_from_wallet, refund, usd


class StoredLog(Log):
    """Feeds the ledger as the auditor does: a wallet or payment the ledger wants is read from the store."""

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[str, Any] = {}
        self.wallet_store: dict[str, Any] = {}
        self.wallets_read: list[str] = []
        self.offsets = itertools.count()  # its own: two stories compare at the same coordinates

    def add(self, event: dict[str, Any], topic: str = "t") -> At:
        wallet_id = self.ledger.wallets_wanted(event)
        if wallet_id is not None and wallet_id not in self.ledger.wallets:
            self.wallets_read.append(wallet_id)
            stored = {wallet_id: self.wallet_store[wallet_id]} if wallet_id in self.wallet_store else {}
            restore_wallets(self.ledger, [wallet_id], stored, self.now)
        wanted = self.ledger.wanted(event)
        if wanted in self.store:
            restore_payments(self.ledger, {wanted: self.store[wanted]}, self.now)
        at = At(topic, 0, next(self.offsets))
        self.ledger.add(event, at, self.now)
        return at


def checkpoint(log: StoredLog, keep_wallets: int = 0) -> Any:
    """What a checkpoint does: the judged payments and the changed wallets go to the store with
    the state, then wallets beyond `keep_wallets` leave memory. The state as JSON."""
    evicted = log.ledger.evicted.copy()
    log.store.update({pid: json.loads(json.dumps(payment_to_dict(book))) for pid, book in evicted.items()})
    log.ledger.written(evicted)
    taken = log.ledger.wallets.take_dirty()
    log.wallet_store.update({w: json.loads(json.dumps(wallet_to_dict(book))) for w, book in taken.items()})
    stored = json.loads(json.dumps(ledger_to_dict(log.ledger)))
    log.ledger.wallets.forget(keep_wallets)
    return stored


def through_json(log: StoredLog) -> None:
    """What a checkpoint then a restart do: the state is read back, and no wallet is in memory."""
    log.ledger = ledger_from_dict(checkpoint(log), log.now)
    assert len(log.ledger.wallets) == 0


def everything(ledger: Ledger) -> Any:
    return (
        [(v.invariant, v.subject, v.message, v.at, v.cleared, v.number) for v in ledger.violations],
        ledger.currency_totals(),
        ledger.sources.figures(),
        ledger.open_counts(),
        ledger.unjudged(),
    )


def story(log: StoredLog, restart_after: int) -> None:
    """An overdraft, a payment left open, then the rest of its saga with a refund that takes
    the money twice (a manual revert of its debit), with a restart after step `restart_after`."""
    first = datetime(2026, 1, 1, tzinfo=UTC)
    steps = [
        lambda: log.move(opening_movement_id(W), "income", 10_000),
        lambda: log.move("overdraw", "expense", 20_000),
        lambda: log.move("back", "income", 20_000),
        lambda: log.add({**ev("PaymentCreated", payment_id=P, amount=usd(5_000), method="wallet")}),
        lambda: log.ledger.payments[P].__setattr__("last_occurred", first),
        lambda: log.move(charge_operation_id(P, "wallet"), "expense", 5_000, P),
        lambda: log.judge(after_s=0.1),
        lambda: log.op(charge_operation_id(P, "wallet"), "charge", usd(5_000)),
        lambda: log.add(ev("PaymentSucceeded", payment_id=P)),
        lambda: log.move("manual-revert", "income", 5_000, reverts=charge_operation_id(P, "wallet")),
        lambda: refund(log, 5_000, 5_000),
        lambda: log.judge(),
    ]
    for n, step in enumerate(steps):
        step()
        if n == restart_after:
            through_json(log)


def test_a_ledger_with_an_open_payment_wallets_and_violations_judges_the_same_after_a_round_trip() -> None:
    straight = StoredLog()
    story(straight, restart_after=-1)
    found = {(v.invariant, v.subject) for v in straight.ledger.violations}
    assert found == {("balance_never_negative", W), ("payment_matches_movements", P)}, found
    for restart_after in range(12):
        resumed = StoredLog()
        story(resumed, restart_after)
        assert everything(resumed.ledger) == everything(straight.ledger), f"restarted after step {restart_after}"


def test_a_round_trip_keeps_an_unjudged_payment_and_its_open_violation() -> None:
    log = StoredLog()
    paid_from_wallet(log)
    log.add(ev("RefundRequested", payment_id=P, refund_id="r", amount=usd(1_000)))
    log.move(refund_operation_id("r"), "income", 1_000, P)
    assert log.judge(after_s=GRACE) == [("payment_matches_movements", P)]  # stuck past the grace period
    through_json(log)
    assert log.judge() == [("payment_matches_movements", P)]
    log.op(refund_operation_id("r"), "refund", usd(1_000))
    log.add(ev("PaymentRefunded", payment_id=P, refund_id="r", amount=usd(1_000), refunded_total=usd(1_000)))
    through_json(log)
    assert log.judge() == [] and [v.cleared for v in log.ledger.violations] == [True]


def test_a_judged_payment_leaves_memory_and_news_about_it_judges_it_again_from_the_store() -> None:
    log = StoredLog()
    paid_from_wallet(log)
    assert log.judge() == [] and P not in log.ledger.payments and P in log.ledger.evicted
    through_json(log)
    assert log.ledger.evicted == {} and log.ledger.payments == {} and P in log.store
    forged = ev("PaymentRefunded", payment_id=P, refund_id="f", amount=usd(5_000), refunded_total=usd(5_000))
    assert log.ledger.wanted(forged) == P  # in neither memory nor the evicted books: the store has it
    log.add(forged)
    assert log.judge() == [("payment_matches_movements", P)]


def test_a_refund_long_after_the_payment_was_judged_reads_its_debit_back() -> None:
    log = Log()
    paid_from_wallet(log)
    log.judge()
    store = {pid: payment_to_dict(book) for pid, book in log.ledger.evicted.items()}
    log.ledger.written(log.ledger.evicted.copy())
    restore_payments(log.ledger, store, log.now)
    refund(log, 5_000, 5_000)
    assert log.judge() == []  # the refund's income is backed by the debit the store kept


def test_a_busy_wallet_keeps_running_figures_not_its_history() -> None:
    log = Log()
    log.move(opening_movement_id(W), "income", 1_000)
    for n in range(100):
        log.move(f"in-{n}", "income", 10)
        log.move(f"out-{n}", "expense", 5)
    book = log.ledger.wallets[W]
    assert book.folded == 201 and len(book.versions) <= KEPT_FOLDED
    assert log.ledger.currency_totals()["USD"] == {
        "balances": 1_500,
        "openings": 1_000,
        "incomes": 1_000,
        "expenses": 500,
    }
    log.move("wrong", "income", 1, balance_after=7)  # the chain is still checked against the folded head
    assert ("balance_equals_movements", W) in log.judge()


def test_only_the_latest_cleared_violations_are_kept() -> None:
    log = Log()
    for n in range(RECENT_CLEARED + 10):
        log.ledger._report("balance_never_negative", f"w{n}", "x", log.add(ev("Nothing"))).cleared = n % 2 == 0
    log.judge()
    assert sum(v.cleared for v in log.ledger.violations) == (RECENT_CLEARED + 10) // 2  # all kept yet
    for v in log.ledger.violations:
        v.cleared = True
    log.judge()
    assert len(log.ledger.violations) == RECENT_CLEARED
    assert [v.number for v in log.ledger.violations] == list(range(11, RECENT_CLEARED + 11))  # the latest
