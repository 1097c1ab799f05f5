"""The auditor's check of where money came from: every applied income names its source and
an actor allowed to give it, and a payment gives back no more than its debit took."""

from __future__ import annotations

from typing import Any

import pytest

from domain.payment import charge_operation_id, compensation_operation_id, refund_operation_id
from domain.wallet import opening_movement_id
from tests.unit.test_money_audit import Log, P, W, paid_from_wallet


def source_violations(log: Log) -> list[tuple[str, Any]]:
    return [(v.subject, v.at) for v in log.ledger.violations if v.invariant == "money_has_a_source"]


def test_legitimate_money_is_counted_per_source_actor_and_currency_with_no_violation() -> None:
    log = Log()
    paid_from_wallet(log)  # an opening of 10,000 by "ops" and a debit of 5,000
    log.move(refund_operation_id("r1"), "income", 2_000, P, actor="admin-1", roles=["admin"])
    log.move(compensation_operation_id(P), "income", 3_000, P, actor="payer", roles=["user"])
    log.move("manual", "income", 700)
    assert source_violations(log) == []
    assert log.ledger.sources.figures() == [
        {"source": "opening", "actor": "ops", "currency": "USD", "amount": 10_000, "incomes": 1},
        {"source": "operator_movement", "actor": "ops", "currency": "USD", "amount": 700, "incomes": 1},
        {"source": "payment_compensation", "actor": "payer", "currency": "USD", "amount": 3_000, "incomes": 1},
        {"source": "payment_refund", "actor": "admin-1", "currency": "USD", "amount": 2_000, "incomes": 1},
    ]


@pytest.mark.parametrize(
    "forged",
    [
        {"source": None},
        {"actor": None, "roles": []},
        {"actor": "someone", "roles": ["user"]},
        {"source": "payment_refund"},
    ],
    ids=["no source", "no actor", "a user", "a source its ids contradict"],
)
def test_money_from_nowhere_is_reported_where_it_is_on_the_log(forged: dict[str, Any]) -> None:
    log = Log()
    at = log.move(opening_movement_id(W), "income", 10**12, **forged)
    assert source_violations(log) == [(W, at)]
    assert "10000000000" in log.ledger.violations[0].message


def test_a_refund_of_a_payment_that_took_nothing_from_the_wallet_is_reported() -> None:
    log = Log()
    log.move(opening_movement_id(W), "income", 1_000)
    at = log.move(refund_operation_id("r1"), "income", 777, P)
    assert source_violations(log) == [(W, at)]
    assert "never took" in log.ledger.violations[0].message


def test_giving_back_more_than_the_debit_took_is_reported_at_the_income_that_overflows() -> None:
    log = Log()
    paid_from_wallet(log, 5_000)
    log.move(refund_operation_id("r1"), "income", 3_000, P)
    at = log.move(refund_operation_id("r2"), "income", 2_001, P)
    assert source_violations(log) == [(W, at)]
    assert "took 5000, has given back 5001" in log.ledger.violations[0].message
    assert charge_operation_id(P, "wallet") in log.ledger.payments[P].movements


def test_the_metric_totals_are_per_source_and_currency_whoever_gave_them() -> None:
    log = Log()
    log.move(opening_movement_id(W), "income", 1_000)
    log.move("m1", "income", 200, actor="ops-2")
    log.move("m2", "income", 300)
    assert log.ledger.sources.per_source() == {("opening", "USD"): 1_000, ("operator_movement", "USD"): 500}
