"""A new wallet payment answered from its terminal event reads exactly as the views will show it."""

from __future__ import annotations

import datetime as dt

from connectors.payment_views import decided_json, payment_json


def at(millis: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC)


def test_the_answer_from_the_terminal_event_equals_the_view_of_the_same_payment() -> None:
    created, decided = 1_795_000_000_123, 1_795_000_000_456
    request = {
        "user_id": "550e8400-e29b-41d4-a716-446655440010",
        "amount": 5000,
        "currency": "USD",
        "payment_method_type": "wallet",
        "wallet_id": "550e8400-e29b-41d4-a716-446655440001",
        "provider": None,
        "token": None,
        "description": "Service payment",
    }
    operation = {
        "operation_id": "8d1c7c4e-2c57-5d6f-9d1c-6a0f1c2a3b4c",
        "kind": "charge",
        "status": "failed",
        "amount": {"amount": 5000, "currency": "USD"},
        "source": "wallet",
        "reference": "8d1c7c4e-2c57-5d6f-9d1c-6a0f1c2a3b4c",
        "failure_code": "insufficient_funds",
        "failure_reason": "balance 10 is less than 5000 USD (minor units)",
        "occurred_at": decided - 5,
    }
    event = {
        "envelope": {"event_type": "PaymentFailed", "occurred_at": decided},
        "reason_code": "insufficient_funds",
        "reason": "balance 10 is less than 5000 USD (minor units)",
        "operation": operation,
    }
    pid = "0b7f3d52-3c8b-4d7e-8a0e-5d7c9f1e2a3b"
    row = {
        "id": pid, **{k: request[k] for k in ("user_id", "amount", "currency", "wallet_id", "provider")},
        "method": "wallet", "description": request["description"], "status": "failed",
        "reason_code": event["reason_code"], "reason": event["reason"], "refunded_amount": 0,
        "created_at": at(created), "updated_at": at(decided), "deadline_at": None,
    }  # fmt: skip
    op_row = {
        "id": operation["operation_id"], "kind": "charge", "status": "failed", "amount": 5000, "currency": "USD",
        "source": "wallet", "reference": operation["reference"], "failure_code": operation["failure_code"],
        "failure_reason": operation["failure_reason"], "inconsistent": False, "created_at": at(decided - 5),
        "deadline_at": None,
    }  # fmt: skip
    assert decided_json(request, pid, created, event) == payment_json(row, [op_row], [])  # type: ignore[arg-type]
