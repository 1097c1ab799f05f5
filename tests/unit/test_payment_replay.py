"""An idempotent replay of a payment answers from the views only once they know all the first answer said."""

from __future__ import annotations

from typing import Any

from services.payment_reads import knows_all_of

CHARGE = {"id": "op-1", "kind": "charge", "status": "succeeded"}


def payment(status: str, operations: list[dict[str, Any]], refunds: list[dict[str, Any]] | None = None) -> dict:
    return {"id": "p-1", "status": status, "operations": operations, "refunds": refunds or []}


def test_a_terminal_row_whose_operations_are_not_projected_yet_is_behind_the_answer() -> None:
    answered = payment("completed", [CHARGE])
    assert not knows_all_of(payment("completed", []), answered)
    assert knows_all_of(payment("completed", [CHARGE]), answered)


def test_a_row_still_processing_is_behind_a_terminal_answer_and_a_later_state_is_not() -> None:
    assert not knows_all_of(payment("processing", []), payment("completed", []))
    refunded = payment("refunded", [CHARGE, {"id": "op-2"}], [{"id": "r-1"}])
    assert knows_all_of(refunded, payment("completed", [CHARGE]))
    assert not knows_all_of(payment("refunded", [CHARGE]), payment("refunded", [CHARGE], [{"id": "r-1"}]))
