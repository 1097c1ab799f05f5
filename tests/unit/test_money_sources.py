"""Money enters a wallet only from a named, allowed source (domain.money_sources): given a
wallet, when a command creates money, then it is applied with its source or refused with why."""

from __future__ import annotations

import pytest

from domain import wallet as w
from domain.access import Principal
from domain.money import Money
from domain.money_sources import payment_debit_id
from domain.payment import compensation_operation_id, refund_operation_id
from tests.unit.test_wallet_domain import NOW, OPERATOR, SETUP, USER_ID, WALLET_ID, Store, only

OWNER = Principal(USER_ID, frozenset({"user"}))
STRANGER = Principal("someone-else", frozenset({"user"}))
PAYMENT = "payment-7"
DEBIT = payment_debit_id(PAYMENT)


def opening(actor: Principal | None, balance: int) -> w.Decision:
    store = Store()
    command = w.OpenWallet("cmd-open", WALLET_ID, USER_ID, "USD", balance, "corr", actor)
    decision = store.apply(w.open_wallet(None, store.movements.get, command, NOW))
    if decision.wallet is None:
        assert store.wallet is None and store.movements == {}  # a refusal changes nothing
    return decision


def paid(amount: int = 5_000) -> Store:
    """A wallet holding 10,000 that paid `amount` for PAYMENT (its debit, by its owner)."""
    store = Store()
    store.open(10_000)
    (debit, _) = store.move(DEBIT, "expense", amount, payment_id=PAYMENT, actor=OWNER).events
    assert isinstance(debit, w.MovementUpdated) and debit.status == "applied"
    return store


def outcome(decision: w.Decision) -> tuple[str, str | None, str | None]:
    (updated,) = only(decision, w.MovementUpdated)
    return updated.status, updated.reason_code, updated.source


def balance(store: Store) -> int:
    assert store.wallet is not None
    return store.wallet.balance


@pytest.mark.parametrize(
    ("actor", "code"),
    [(None, "actor_missing"), (OWNER, "source_not_allowed")],
    ids=["no actor", "a user"],
)
def test_an_opening_balance_without_an_allowed_actor_opens_nothing(actor: Principal | None, code: str) -> None:
    (refused,) = opening(actor, 10**12).events
    assert isinstance(refused, w.WalletOpened)
    assert (refused.status, refused.reason_code) == ("rejected", code)
    assert refused.reason and ("actor" in refused.reason or "opening balance" in refused.reason)


def test_a_user_may_open_an_empty_wallet_but_not_one_without_an_actor() -> None:
    opened, zero = opening(OWNER, 0).events
    assert isinstance(opened, w.WalletOpened) and opened.status == "applied"
    assert isinstance(zero, w.BalanceUpdated) and zero.balance == Money(0, "USD")
    (refused,) = opening(None, 0).events
    assert isinstance(refused, w.WalletOpened) and refused.reason_code == "actor_missing"


@pytest.mark.parametrize("actor", [SETUP, OPERATOR], ids=["admin", "operator"])
def test_an_operator_or_admin_opens_a_wallet_holding_money_named_as_an_opening(actor: Principal) -> None:
    decision = opening(actor, 100_000)
    assert outcome(decision) == ("applied", None, "opening")
    (updated,) = only(decision, w.MovementUpdated)
    assert (updated.meta.actor_subject, updated.meta.actor_roles) == (actor.subject, tuple(actor.roles))


@pytest.mark.parametrize("kind", ["income", "expense"])
def test_a_movement_without_an_actor_is_refused_and_moves_nothing(kind: w.MovementType) -> None:
    store = Store()
    store.open(10_000)
    assert outcome(store.move("m1", kind, 777, actor=None))[:2] == ("rejected", "actor_missing")
    assert balance(store) == 10_000


def test_an_income_outside_a_payment_is_an_operators_and_names_its_source() -> None:
    store = Store()
    store.open(10_000)
    assert outcome(store.move("m1", "income", 500, actor=OPERATOR)) == ("applied", None, "operator_movement")
    assert outcome(store.move("m2", "income", 500, actor=SETUP))[0] == "applied"
    assert outcome(store.move("m3", "income", 500, actor=OWNER))[:2] == ("rejected", "actor_not_allowed")
    assert balance(store) == 11_000


def test_a_refund_backed_by_the_payments_debit_is_applied_and_counted_against_it() -> None:
    store = paid(5_000)
    refund = store.move(refund_operation_id("r1"), "income", 2_000, payment_id=PAYMENT, actor=OPERATOR)
    assert outcome(refund) == ("applied", None, "payment_refund")
    assert store.movements[DEBIT].returned == 2_000
    again = store.move(refund_operation_id("r1"), "income", 2_000, payment_id=PAYMENT, actor=OPERATOR)
    assert again.events == refund.events and store.movements[DEBIT].returned == 2_000  # redelivered: once
    assert balance(store) == 7_000


def test_a_refund_by_a_user_is_refused_even_for_their_own_payment() -> None:
    store = paid(5_000)
    refused = store.move(refund_operation_id("r1"), "income", 2_000, payment_id=PAYMENT, actor=OWNER)
    assert outcome(refused) == ("rejected", "source_not_allowed", "payment_refund")
    assert balance(store) == 5_000


@pytest.mark.parametrize(
    "setup",
    ["no debit", "a rejected debit", "another payment's debit"],
)
def test_payment_money_not_backed_by_its_debit_in_this_wallet_is_refused(setup: str) -> None:
    store = Store()
    store.open(1_000)
    if setup == "a rejected debit":
        assert outcome(store.move(DEBIT, "expense", 5_000, payment_id=PAYMENT, actor=OWNER))[1] == "insufficient_funds"
    if setup == "another payment's debit":
        store.move(payment_debit_id("payment-other"), "expense", 500, payment_id="payment-other", actor=OWNER)
    before = balance(store)
    refused = store.move(refund_operation_id("r1"), "income", 500, payment_id=PAYMENT, actor=OPERATOR)
    assert outcome(refused)[:2] == ("rejected", "not_backed_by_payment")
    (updated,) = only(refused, w.MovementUpdated)
    assert PAYMENT in (updated.reason or "")
    assert balance(store) == before


def test_the_money_given_back_for_a_payment_never_exceeds_its_debit() -> None:
    store = paid(5_000)
    assert outcome(store.move(refund_operation_id("r1"), "income", 3_000, payment_id=PAYMENT, actor=OPERATOR))[0] == (
        "applied"
    )
    over = store.move(refund_operation_id("r2"), "income", 2_500, payment_id=PAYMENT, actor=OPERATOR)
    assert outcome(over)[:2] == ("rejected", "not_backed_by_payment")
    (updated,) = only(over, w.MovementUpdated)
    assert "2000 left" in (updated.reason or "")
    assert outcome(store.move(refund_operation_id("r3"), "income", 2_000, payment_id=PAYMENT, actor=SETUP))[0] == (
        "applied"
    )
    compensation = compensation_operation_id(PAYMENT)
    assert outcome(store.move(compensation, "income", 1, payment_id=PAYMENT, actor=OWNER))[1] == "not_backed_by_payment"
    assert balance(store) == 10_000 and store.movements[DEBIT].returned == 5_000


def test_the_payers_compensation_reverts_the_debit_and_is_counted() -> None:
    store = paid(5_000)
    compensation = compensation_operation_id(PAYMENT)
    decision = store.move(compensation, "income", 5_000, reverts=DEBIT, payment_id=PAYMENT, actor=OWNER)
    assert outcome(decision) == ("applied", None, "payment_compensation")
    assert (store.movements[DEBIT].reverted_by, store.movements[DEBIT].returned) == (compensation, 5_000)
    assert balance(store) == 10_000


def test_a_compensation_by_someone_who_is_not_the_payer_is_refused() -> None:
    store = paid(5_000)
    store.wallet = w.Wallet(WALLET_ID, STRANGER.subject, "USD", 5_000, 2)  # a stranger's wallet now
    compensation = compensation_operation_id(PAYMENT)
    refused = store.move(compensation, "income", 5_000, payment_id=PAYMENT, actor=OWNER)
    assert outcome(refused)[:2] == ("rejected", "actor_not_allowed")
