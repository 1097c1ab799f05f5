"""The fault suite's payment-vs-movements invariant, on a hand-made log."""

from __future__ import annotations

from typing import Any

from tests.chaos.invariants import LogState, log_payment_movements_agree

PID = "payment-1"


def ev(event_type: str, **fields: Any) -> dict[str, Any]:
    return {"envelope": {"event_type": event_type}, **fields}


def movement(movement_id: str, kind: str, amount: int, payment_id: str | None, reverts: str | None = None) -> Any:
    return ev(
        "MovementUpdated",
        movement_id=movement_id,
        wallet_id="w",
        type=kind,
        amount={"amount": amount, "currency": "USD"},
        status="applied",
        reason_code=None,
        balance_after=0,
        wallet_version=0,
        payment_id=payment_id,
        reverts_movement_id=reverts,
    )


def paid_and_refunded(*extra: dict[str, Any]) -> LogState:
    log = LogState()
    events = [
        ev("PaymentCreated", payment_id=PID, method="wallet", amount={"amount": 5_000, "currency": "USD"}),
        movement("debit", "expense", 5_000, PID),
        ev("PaymentSucceeded", payment_id=PID),
        movement("refund", "income", 5_000, PID, reverts="debit"),
        ev("PaymentRefunded", payment_id=PID, refund_id="r", refunded_total={"amount": 5_000}, status="refunded"),
        *extra,
    ]
    for event in events:
        log.add(event)
    return log


def test_a_refunded_payment_whose_movements_net_to_zero_passes() -> None:
    assert log_payment_movements_agree(paid_and_refunded(), [PID]) == []


def test_a_manual_revert_of_the_debit_counts_against_the_payment() -> None:
    log = paid_and_refunded(movement("manual", "income", 5_000, None, reverts="debit"))
    (problem,) = log_payment_movements_agree(log, [PID])
    assert PID in problem and "net 5000" in problem
