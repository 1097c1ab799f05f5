"""The auditor's ledger: given events read from the log, then the violations it names."""

from __future__ import annotations

import itertools
from typing import Any

from domain.audit import At, Ledger
from domain.audit_sources import source_of
from domain.payment import charge_operation_id, compensation_operation_id, refund_operation_id
from domain.wallet import opening_movement_id

W, P = "wallet-1", "payment-1"
QUIET, GRACE = 2.0, 30.0
offsets = itertools.count()


def ev(event_type: str, **fields: Any) -> dict[str, Any]:
    return {"envelope": {"event_type": event_type}, **fields}


def usd(amount: int, currency: str = "USD") -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


class Log:
    """Feeds a ledger the way the auditor does, one event at a time, with its coordinates."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.version = 0
        self.balance = 0
        self.now = 0.0

    def add(self, event: dict[str, Any], topic: str = "t") -> At:
        at = At(topic, 0, next(offsets))
        self.ledger.add(event, at, self.now)
        return at

    def move(self, movement_id: str, kind: str, amount: int, payment_id: str | None = None, **extra: Any) -> At:
        self.version += 1
        self.balance += amount if kind == "income" else -amount
        event = ev(
            "MovementUpdated",
            movement_id=movement_id,
            wallet_id=W,
            type=kind,
            amount=usd(amount),
            status="applied",
            wallet_version=self.version,
            balance_after=extra.pop("balance_after", self.balance),
            payment_id=payment_id,
            reverts_movement_id=extra.pop("reverts", None),
        )
        # As the wallet names them: the source its ids make it, given by an operator unless told.
        event["source"] = extra.pop("source", source_of(event) if kind == "income" else None)
        event["envelope"].update(actor_subject=extra.pop("actor", "ops"), actor_roles=extra.pop("roles", ["operator"]))
        at = self.add(event, "wallet.movement_updates")
        self.add(ev("BalanceUpdated", wallet_id=W, version=self.version, balance=usd(self.balance)))
        return at

    def pay(self, amount: int, method: str = "wallet") -> None:
        self.add(ev("PaymentCreated", payment_id=P, amount=usd(amount), method=method))

    def op(self, op_id: str, kind: str, amount: dict[str, Any], source: str = "wallet") -> None:
        self.add(
            ev(
                "PaymentOperationCompleted",
                payment_id=P,
                operation_id=op_id,
                kind=kind,
                status="succeeded",
                amount=amount,
                source=source,
            )
        )

    def judge(self, after_s: float = QUIET) -> list[tuple[str, str]]:
        self.now += after_s
        self.ledger.judge(self.now, QUIET, GRACE)
        return [(v.invariant, v.subject) for v in self.ledger.violations if not v.cleared]


def paid_from_wallet(log: Log, amount: int = 5_000) -> None:
    log.move(opening_movement_id(W), "income", 10_000)
    log.pay(amount)
    log.move(charge_operation_id(P, "wallet"), "expense", amount, P)
    log.op(charge_operation_id(P, "wallet"), "charge", usd(amount))
    log.add(ev("PaymentSucceeded", payment_id=P))


def refund(log: Log, amount: int, total: int, reverts: str | None = None) -> None:
    refund_id = f"refund-{total}"
    log.add(ev("RefundRequested", payment_id=P, refund_id=refund_id, amount=usd(amount)))
    log.move(refund_operation_id(refund_id), "income", amount, P, reverts=reverts)
    log.op(refund_operation_id(refund_id), "refund", usd(amount))
    log.add(ev("PaymentRefunded", payment_id=P, refund_id=refund_id, amount=usd(amount), refunded_total=usd(total)))


def test_a_paid_and_refunded_wallet_payment_has_no_violation() -> None:
    log = Log()
    paid_from_wallet(log)
    refund(log, 2_000, 2_000)
    refund(log, 3_000, 5_000)
    assert log.judge() == []
    assert log.ledger.currency_totals()["USD"] == {
        "balances": 10_000,
        "openings": 10_000,
        "incomes": 5_000,
        "expenses": 5_000,
    }


def test_a_movement_that_overdraws_is_reported_at_once_with_its_coordinates() -> None:
    log = Log()
    log.move(opening_movement_id(W), "income", 1_000)
    at = log.move("overdraw", "expense", 1_500)
    negative = [v for v in log.ledger.violations if v.invariant == "balance_never_negative"]
    assert [v.at for v in negative][:1] == [at] and negative[0].subject == W


def test_a_balance_after_that_breaks_the_chain_is_reported() -> None:
    log = Log()
    log.move(opening_movement_id(W), "income", 1_000)
    at = log.move("m2", "income", 500, balance_after=9_999)
    broken = [v for v in log.ledger.violations if v.invariant == "balance_equals_movements"]
    assert broken and broken[0].at == at


def test_a_manual_revert_of_the_debit_plus_a_refund_pays_twice_and_is_reported() -> None:
    log = Log()
    paid_from_wallet(log)
    log.move("manual-revert", "income", 5_000, reverts=charge_operation_id(P, "wallet"))
    refund(log, 5_000, 5_000)
    assert log.judge() == [("payment_matches_movements", P)]


def test_a_violation_names_the_payments_latest_event_by_time_whatever_the_order_topics_are_read_in() -> None:
    def at_ms(occurred_at: int, event: dict[str, Any]) -> dict[str, Any]:
        event["envelope"]["occurred_at"] = occurred_at
        return event

    log = Log()
    log.move(opening_movement_id(W), "income", 10_000)
    charge = charge_operation_id(P, "wallet")
    refunded = ev("PaymentRefunded", payment_id=P, refund_id="r", amount=usd(5_000), refunded_total=usd(5_000))
    at_refund = log.add(at_ms(4, refunded), "payment.refunded")  # its topic happened to be read first
    log.add(at_ms(1, ev("PaymentCreated", payment_id=P, amount=usd(5_000), method="wallet")), "payment.created")
    log.move(charge, "expense", 5_000, P)
    log.add(at_ms(2, ev("PaymentOperationCompleted", payment_id=P, operation_id=charge, amount=usd(5_000))))
    log.add(at_ms(3, ev("PaymentSucceeded", payment_id=P)), "payment.success")
    assert log.judge() == [("payment_matches_movements", P)]
    assert [v.at for v in log.ledger.violations] == [at_refund]


def test_a_payment_is_judged_only_once_quiet_and_settled() -> None:
    log = Log()
    paid_from_wallet(log)
    log.add(ev("RefundRequested", payment_id=P, refund_id="r", amount=usd(1_000)))
    log.move(refund_operation_id("r"), "income", 1_000, P)
    assert log.judge(after_s=0.5) == [] and log.ledger.unjudged() == 1  # not quiet yet
    assert log.judge(after_s=QUIET) == [] and log.ledger.unjudged() == 1  # refund in flight
    assert log.judge(after_s=GRACE) == [("payment_matches_movements", P)]  # stuck past the grace period
    log.op(refund_operation_id("r"), "refund", usd(1_000))
    log.add(ev("PaymentRefunded", payment_id=P, refund_id="r", amount=usd(1_000), refunded_total=usd(1_000)))
    assert log.judge() == []  # the saga was slow, not wrong: the violation is cleared
    assert [v.cleared for v in log.ledger.violations] == [True]


def test_a_provider_charge_of_another_amount_that_completes_the_payment_is_reported() -> None:
    log = Log()
    log.pay(100_000, method="external")
    log.op(charge_operation_id(P, "external"), "charge", usd(100, "EUR"), source="provider")
    log.add(ev("PaymentSucceeded", payment_id=P))
    assert log.judge() == [("provider_matches_payment", P)]


def test_a_late_provider_charge_flagged_and_compensated_keeps_nothing() -> None:
    log = Log()
    log.pay(1_500, method="external")
    log.add(ev("PaymentFailed", payment_id=P))
    log.op(charge_operation_id(P, "external"), "charge", usd(1_500), source="provider")
    log.add(ev("PaymentOperationInconsistent", payment_id=P, operation_id=charge_operation_id(P, "external")))
    assert log.judge() == [("provider_matches_payment", P)]  # the provider still holds the money
    log.op(compensation_operation_id(P), "refund", usd(1_500), source="provider")
    assert log.judge() == []
