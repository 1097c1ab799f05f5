"""The wallet aggregate as pure functions: given state, when a command, then events."""

from __future__ import annotations

import dataclasses

import pytest

from domain import wallet as w
from domain.access import Principal
from domain.ids import derive_id
from domain.money import InvalidMoney, Money
from domain.money_sources import payment_debit_id

WALLET_ID = "550e8400-e29b-41d4-a716-446655440001"
USER_ID = "550e8400-e29b-41d4-a716-446655440010"
NOW = 1_700_000_000_000
SETUP = Principal("setup", frozenset({"admin"}))
OPERATOR = Principal("ops", frozenset({"operator"}))


class Store:
    """Holds what the worker's tables would hold, applying decisions like the agent does."""

    def __init__(self) -> None:
        self.wallet: w.Wallet | None = None
        self.movements: dict[str, w.MovementRecord] = {}

    def apply(self, decision: w.Decision) -> w.Decision:
        for record in decision.records:
            self.movements[record.movement_id] = record
        if decision.wallet is not None:
            self.wallet = decision.wallet
        return decision

    def open(self, balance: int = 50_000, currency: str = "USD") -> w.Decision:
        command = w.OpenWallet("cmd-open", WALLET_ID, USER_ID, currency, balance, "corr", SETUP)
        return self.apply(w.open_wallet(self.wallet, self.movements.get, command, NOW))

    def move(
        self,
        movement_id: str,
        kind: w.MovementType,
        amount: int,
        currency: str = "USD",
        reverts: str | None = None,
        now: int = NOW,
        payment_id: str | None = None,
        actor: Principal | None = OPERATOR,
    ) -> w.Decision:
        command = w.RequireMovement(
            f"cmd-{movement_id}",
            movement_id,
            WALLET_ID,
            kind,
            Money(amount, currency),
            "corr",
            reverts_movement_id=reverts,
            payment_id=payment_id,
            actor=actor,
        )
        return self.apply(w.decide_movement(self.wallet, self.movements.get, command, now))


def only(decision: w.Decision, kind: type) -> list:
    return [e for e in decision.events if isinstance(e, kind)]


def test_opening_a_wallet_applies_an_opening_income_movement() -> None:
    store = Store()
    decision = store.open(100_000)
    assert [type(e).__name__ for e in decision.events] == ["WalletOpened", "MovementUpdated", "BalanceUpdated"]
    assert store.wallet == w.Wallet(WALLET_ID, USER_ID, "USD", 100_000, 1)
    (movement,) = only(decision, w.MovementUpdated)
    assert movement.movement_id == w.opening_movement_id(WALLET_ID)
    assert (movement.type, movement.amount, movement.status) == ("income", Money(100_000, "USD"), "applied")


def test_opening_twice_re_emits_the_same_events_and_changes_nothing() -> None:
    store = Store()
    first = store.open(100_000)
    second = store.open(100_000)
    assert second.wallet is None and second.records == ()
    assert second.events == first.events
    assert store.wallet is not None and store.wallet.balance == 100_000


def test_opening_an_existing_wallet_for_another_user_is_rejected() -> None:
    store = Store()
    store.open()
    command = w.OpenWallet("cmd-other", WALLET_ID, "someone-else", "USD", 0, "corr", SETUP)
    decision = w.open_wallet(store.wallet, store.movements.get, command, NOW)
    (opened,) = decision.events
    assert isinstance(opened, w.WalletOpened)
    assert (opened.status, opened.reason_code) == ("rejected", "wallet_exists")


def test_an_empty_wallet_publishes_its_zero_balance() -> None:
    store = Store()
    decision = store.open(0)
    (balance,) = only(decision, w.BalanceUpdated)
    assert balance.balance == Money(0, "USD") and balance.version == 0
    assert store.movements == {}


def test_income_and_expense_move_the_balance_and_the_version() -> None:
    store = Store()
    store.open(50_000)
    store.move("m1", "income", 10_000)
    decision = store.move("m2", "expense", 30_000)
    (balance,) = only(decision, w.BalanceUpdated)
    assert balance.balance == Money(30_000, "USD") and balance.version == 3
    assert store.movements["m2"].balance_after == 30_000


def test_an_expense_above_the_balance_is_rejected_and_changes_nothing() -> None:
    store = Store()
    store.open(5_000)
    decision = store.move("m1", "expense", 5_001)
    (updated,) = decision.events
    assert isinstance(updated, w.MovementUpdated)
    assert (updated.status, updated.reason_code) == ("rejected", "insufficient_funds")
    assert decision.wallet is None
    assert store.wallet is not None and store.wallet.balance == 5_000


def test_an_expense_of_exactly_the_balance_leaves_zero() -> None:
    store = Store()
    store.open(5_000)
    store.move("m1", "expense", 5_000)
    assert store.wallet is not None and store.wallet.balance == 0


def test_another_currency_is_rejected() -> None:
    store = Store()
    store.open(5_000, "USD")
    (updated,) = store.move("m1", "income", 100, currency="EUR").events
    assert isinstance(updated, w.MovementUpdated) and updated.reason_code == "currency_mismatch"


def test_a_movement_on_an_unknown_wallet_is_rejected() -> None:
    store = Store()
    (updated,) = store.move("m1", "income", 100).events
    assert isinstance(updated, w.MovementUpdated) and updated.reason_code == "wallet_not_found"


@pytest.mark.parametrize("amount", [0, -5])
def test_non_positive_amounts_are_rejected(amount: int) -> None:
    store = Store()
    store.open(5_000)
    (updated,) = store.move("m1", "income", amount).events
    assert isinstance(updated, w.MovementUpdated) and updated.reason_code == "invalid_amount"


def test_a_redelivered_movement_is_applied_once_and_re_emits_the_same_events() -> None:
    store = Store()
    store.open(50_000)
    first = store.move("m1", "expense", 3_000)
    again = store.move("m1", "expense", 3_000, now=NOW + 60_000)
    assert again.events == first.events  # same event ids, same timestamps, same balances
    assert again.wallet is None and again.records == ()
    assert store.wallet is not None and store.wallet.balance == 47_000


def test_a_redelivered_rejection_stays_rejected_even_after_funds_arrive() -> None:
    store = Store()
    store.open(1_000)
    first = store.move("m1", "expense", 3_000)
    store.move("m2", "income", 10_000)
    again = store.move("m1", "expense", 3_000)
    assert again.events == first.events
    assert store.wallet is not None and store.wallet.balance == 11_000


def test_reusing_a_movement_id_for_a_different_movement_is_a_conflict() -> None:
    store = Store()
    store.open(50_000)
    store.move("m1", "expense", 3_000)
    (conflict,) = store.move("m1", "expense", 4_000).events
    assert isinstance(conflict, w.MovementUpdated) and conflict.reason_code == "idempotency_conflict"
    assert conflict.meta.event_id != derive_id("MovementUpdated", "m1")
    assert store.wallet is not None and store.wallet.balance == 47_000


def test_a_wallet_write_lost_in_a_crash_is_restored_from_the_movement_record() -> None:
    store = Store()
    store.open(50_000)
    before = store.wallet
    store.move("m1", "expense", 3_000)
    store.wallet = before  # the movement record survived, the wallet write did not
    decision = store.move("m1", "expense", 3_000)
    assert decision.wallet is not None and decision.wallet.balance == 47_000
    assert store.wallet is not None and (store.wallet.balance, store.wallet.version) == (47_000, 2)


def test_a_revert_is_an_opposite_movement_naming_the_original() -> None:
    store = Store()
    store.open(50_000)
    store.move("m1", "expense", 3_000)
    decision = store.move("r1", "income", 3_000, reverts="m1")
    (updated,) = only(decision, w.MovementUpdated)
    assert (updated.status, updated.reverts_movement_id) == ("applied", "m1")
    assert store.movements["m1"].reverted_by == "r1"
    assert store.wallet is not None and store.wallet.balance == 50_000


def test_a_movement_is_reverted_at_most_once() -> None:
    store = Store()
    store.open(50_000)
    store.move("m1", "expense", 3_000)
    store.move("r1", "income", 3_000, reverts="m1")
    (second,) = store.move("r2", "income", 3_000, reverts="m1").events
    assert isinstance(second, w.MovementUpdated) and second.reason_code == "already_reverted"
    assert store.wallet is not None and store.wallet.balance == 50_000


def test_reverting_an_income_that_was_spent_is_rejected_for_funds() -> None:
    store = Store()
    store.open(0)
    store.move("m1", "income", 3_000)
    store.move("m2", "expense", 2_000)
    (updated,) = store.move("r1", "expense", 3_000, reverts="m1").events
    assert isinstance(updated, w.MovementUpdated) and updated.reason_code == "insufficient_funds"


@pytest.mark.parametrize(
    ("kind", "amount", "code"),
    [("expense", 3_000, "revert_mismatch"), ("income", 2_000, "revert_mismatch")],
)
def test_a_revert_must_mirror_the_original(kind: w.MovementType, amount: int, code: str) -> None:
    store = Store()
    store.open(50_000)
    store.move("m1", "expense", 3_000)
    (updated,) = store.move("r1", kind, amount, reverts="m1").events
    assert isinstance(updated, w.MovementUpdated) and updated.reason_code == code


def test_reverting_unknown_rejected_or_revert_movements_is_refused() -> None:
    store = Store()
    store.open(1_000)
    assert store.move("r0", "income", 5, reverts="nope").events[0].reason_code == "movement_not_found"
    store.move("m1", "expense", 5_000)  # rejected
    assert store.move("r1", "income", 5_000, reverts="m1").events[0].reason_code == "movement_not_applied"
    store.move("m2", "expense", 100)
    store.move("r2", "income", 100, reverts="m2")
    assert store.move("r3", "expense", 100, reverts="r2").events[0].reason_code == "not_revertible"


PAYMENT = "payment-1"
DEBIT = payment_debit_id(PAYMENT)


def test_a_manual_revert_of_a_payments_debit_is_refused_and_names_the_refund() -> None:
    store = Store()
    store.open(10_000)
    store.move(DEBIT, "expense", 5_000, payment_id=PAYMENT)
    (refused,) = store.move("manual", "income", 5_000, reverts=DEBIT).events
    assert isinstance(refused, w.MovementUpdated) and refused.status == "rejected"
    assert refused.reason_code == w.PAYMENT_MOVEMENT
    assert PAYMENT in (refused.reason or "") and "refund the payment" in (refused.reason or "")
    assert store.wallet is not None and (store.wallet.balance, store.wallet.version) == (5_000, 2)
    assert store.movements[DEBIT].reverted_by is None


def test_a_manual_revert_of_a_payments_refund_credit_is_refused() -> None:
    store = Store()
    store.open(10_000)
    store.move(DEBIT, "expense", 5_000, payment_id=PAYMENT)
    store.move("refund", "income", 2_000, payment_id=PAYMENT)
    (refused,) = store.move("manual", "expense", 2_000, reverts="refund").events
    assert isinstance(refused, w.MovementUpdated) and refused.reason_code == w.PAYMENT_MOVEMENT
    assert store.wallet is not None and store.wallet.balance == 7_000


def test_the_payments_own_revert_of_its_debit_is_applied() -> None:
    store = Store()
    store.open(10_000)
    store.move(DEBIT, "expense", 5_000, payment_id=PAYMENT)
    updated, balance = store.move("full-refund", "income", 5_000, reverts=DEBIT, payment_id=PAYMENT).events
    assert isinstance(updated, w.MovementUpdated) and updated.status == "applied"
    assert isinstance(balance, w.BalanceUpdated) and balance.balance.amount == 10_000
    assert store.movements[DEBIT].reverted_by == "full-refund"


def test_another_payment_may_not_revert_a_payments_debit() -> None:
    store = Store()
    store.open(10_000)
    store.move(DEBIT, "expense", 5_000, payment_id=PAYMENT)
    (refused,) = store.move("other", "income", 5_000, reverts=DEBIT, payment_id="payment-2").events
    assert isinstance(refused, w.MovementUpdated) and refused.reason_code == w.PAYMENT_MOVEMENT


def test_a_refused_manual_revert_redelivered_stays_refused_after_the_refund() -> None:
    store = Store()
    store.open(10_000)
    store.move(DEBIT, "expense", 5_000, payment_id=PAYMENT)
    first = store.move("manual", "income", 5_000, reverts=DEBIT)
    store.move("full-refund", "income", 5_000, reverts=DEBIT, payment_id=PAYMENT)
    again = store.move("manual", "income", 5_000, reverts=DEBIT)
    assert again.events == first.events and again.wallet is None
    assert store.wallet is not None and store.wallet.balance == 10_000


def test_a_manual_movement_can_still_be_reverted_by_hand() -> None:
    store = Store()
    store.open(10_000)
    store.move("manual-expense", "expense", 1_000)
    (updated, _) = store.move("r1", "income", 1_000, reverts="manual-expense").events
    assert isinstance(updated, w.MovementUpdated) and updated.status == "applied"


def test_the_balance_always_equals_the_sum_of_applied_movements() -> None:
    store = Store()
    store.open(10_000)
    for i in range(40):
        store.move(f"m{i}", "expense" if i % 3 else "income", 700 + i)
    applied = [m for m in store.movements.values() if m.status == "applied"]
    total = sum(m.amount if m.type == "income" else -m.amount for m in applied)
    assert store.wallet is not None and store.wallet.balance == total >= 0


def test_money_refuses_floats_booleans_and_unknown_currencies() -> None:
    with pytest.raises(InvalidMoney):
        Money(10.5, "USD")  # type: ignore[arg-type]
    with pytest.raises(InvalidMoney):
        Money(True, "USD")
    with pytest.raises(InvalidMoney) as error:
        Money(10, "XXX")
    assert error.value.field == "currency"


def test_records_round_trip_through_plain_dicts_as_the_tables_store_them() -> None:
    store = Store()
    store.open(1_000)
    record = store.movements[w.opening_movement_id(WALLET_ID)]
    assert w.MovementRecord(**dataclasses.asdict(record)) == record
