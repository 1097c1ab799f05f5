"""Wallets the auditor does not hold in memory: read back from its store on demand, they are
judged as if they had never left, and what judging needs from every wallet (the currency sums)
does not need them in memory."""

from __future__ import annotations

import json
from typing import Any

from domain.audit_state import ledger_from_dict, ledger_to_dict, wallet_to_dict
from domain.wallet import opening_movement_id
from tests.unit.test_money_audit import GRACE, W, ev, usd
from tests.unit.test_money_audit_state import StoredLog, checkpoint, everything, story, through_json


def opening(wallet_id: str, amount: int, version: int = 1, balance_after: int | None = None) -> list[dict[str, Any]]:
    """An income at `version` (the opening at 1) and its balance update."""
    balance = amount * version if balance_after is None else balance_after
    movement = ev(
        "MovementUpdated",
        movement_id=opening_movement_id(wallet_id) if version == 1 else f"{wallet_id}-in-{version}",
        wallet_id=wallet_id,
        type="income",
        amount=usd(amount),
        status="applied",
        wallet_version=version,
        balance_after=balance,
        payment_id=None,
        reverts_movement_id=None,
        source="opening" if version == 1 else "operator_movement",
    )
    movement["envelope"].update(actor_subject="ops", actor_roles=["operator"])
    update = ev("BalanceUpdated", wallet_id=wallet_id, version=version, balance=usd(balance))
    return [movement, update]


def test_a_checkpoint_that_lets_every_wallet_go_after_each_step_changes_no_judgment() -> None:
    straight = StoredLog()
    story(straight, restart_after=-1)
    forgetful = StoredLog()
    steps_seen = []
    original_add = forgetful.add

    def add_then_checkpoint(event: dict[str, Any], topic: str = "t") -> Any:
        at = original_add(event, topic)
        checkpoint(forgetful, keep_wallets=0)
        steps_seen.append(len(forgetful.ledger.wallets))
        return at

    forgetful.add = add_then_checkpoint  # type: ignore[method-assign]
    story(forgetful, restart_after=-1)
    assert everything(forgetful.ledger) == everything(straight.ledger)
    assert set(steps_seen) == {0} and forgetful.wallets_read.count(W) > 5  # read back again and again


def test_the_currency_sums_count_wallets_that_are_not_in_memory() -> None:
    log = StoredLog()
    for n in range(5):
        for event in opening(f"w{n}", 1_000):
            log.add(event)
    checkpoint(log, keep_wallets=0)
    assert len(log.ledger.wallets) == 0
    assert log.ledger.currency_totals() == {"USD": {"balances": 5_000, "openings": 5_000, "incomes": 0, "expenses": 0}}
    for event in opening("w3", 500, version=2, balance_after=1_500):  # read back, then changed
        log.add(event)
    assert log.wallets_read == [f"w{n}" for n in range(5)] + ["w3"]
    assert log.ledger.currency_totals()["USD"] == {"balances": 5_500, "openings": 5_000, "incomes": 500, "expenses": 0}
    assert log.judge() == []


def test_a_wallet_read_back_is_still_checked_against_its_folded_history() -> None:
    log = StoredLog()
    for event in opening("w1", 1_000):
        log.add(event)
    through_json(log)
    log.add(opening("w1", 1_000, version=2, balance_after=9_999)[0])  # claims a balance v1 did not leave
    assert ("balance_equals_movements", "w1") in log.judge()


def test_the_least_recently_used_clean_wallets_leave_first_and_changed_ones_stay() -> None:
    log = StoredLog()
    for n in range(4):
        for event in opening(f"w{n}", 100):
            log.add(event)
    checkpoint(log, keep_wallets=4)
    log.add(opening("w0", 100, version=2)[0])  # w0 used last, and changed since the checkpoint
    log.ledger.wallets.forget(1)
    assert set(dict(log.ledger.wallets.items())) == {"w0", "w3"}  # changed, and the one clean kept
    checkpoint(log, keep_wallets=4)
    log.add(opening("w2", 100, version=2)[0])
    checkpoint(log, keep_wallets=1)
    assert set(dict(log.ledger.wallets.items())) == {"w2"}


def test_a_wallet_with_a_missing_version_stays_in_memory_until_the_gap_is_reported() -> None:
    log = StoredLog()
    for event in opening(W, 1_000):
        log.add(event)
    log.add(opening(W, 1_000, version=3)[0])  # v2 never read
    checkpoint(log, keep_wallets=0)
    assert W in log.ledger.wallets
    assert log.judge(after_s=GRACE) == [("balance_equals_movements", W)]
    checkpoint(log, keep_wallets=0)
    assert W not in log.ledger.wallets  # reported once: nothing left to judge about it
    assert log.judge(after_s=GRACE) == [("balance_equals_movements", W)] and log.ledger.found == 1


def test_a_state_of_the_format_that_held_every_wallet_is_still_read() -> None:
    straight = StoredLog()
    story(straight, restart_after=-1)
    older = StoredLog()
    story(older, restart_after=7)  # any step: the state below replaces the ledger
    state = json.loads(json.dumps(ledger_to_dict(older.ledger)))
    state.update(format=1, wallets={w: wallet_to_dict(book) for w, book in older.ledger.wallets.items()})
    del state["wallet_totals"], state["latest_balance_at"]

    older.ledger = ledger_from_dict(state, older.now)
    assert everything(older.ledger) == everything(straight.ledger)
    assert older.ledger.wallets.take_dirty().keys() == {W}  # the next checkpoint writes it apart
