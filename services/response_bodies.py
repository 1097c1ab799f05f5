"""The JSON bodies the payment and wallet APIs answer with, as JSON Schema for their OpenAPI
documents (the views' `payment_json`, `wallet_json` and `movement_json`, and the answers the
APIs build from events before the views have them)."""

from __future__ import annotations

from typing import Any

from domain.money import CURRENCIES
from services.http import MAX_AMOUNT
from services.openapi import answer_schema

Schema = dict[str, Any]

UUID: Schema = {"type": "string", "format": "uuid"}
MAYBE_UUID: Schema = {"type": ["string", "null"], "format": "uuid"}
AMOUNT: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT, "description": "minor units"}
CURRENCY: Schema = {"type": "string", "enum": sorted(CURRENCIES)}
TIME: Schema = {"type": "string", "format": "date-time"}
TEXT: Schema = {"type": "string"}
MAYBE_TEXT: Schema = {"type": ["string", "null"]}
MAYBE_TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
COUNT: Schema = {"type": "integer", "minimum": 0}

OPERATION = answer_schema(
    {
        "id": UUID,
        # Avro enums on the log (schemas/types/operation_*.avsc), which may gain symbols: text here.
        "kind": {"type": "string", "description": "charge or refund"},
        "status": {
            "type": "string",
            "description": "pending (the provider accepted it; its webhook decides), succeeded or failed",
        },
        "amount": AMOUNT,
        "currency": CURRENCY,
        "source": {"type": "string", "description": "wallet, provider or deadline"},
        "reference": {
            "type": ["string", "null"],
            "description": "the provider's id of its charge or refund (ch_..., pi_..., re_...), or the wallet movement",
        },
        "failure_code": MAYBE_TEXT,
        "failure_reason": MAYBE_TEXT,
        "inconsistent": {"type": "boolean"},
        "created_at": TIME,
    },
    {"deadline_at": {**MAYBE_TIME, "description": "until when the provider's webhook is waited for"}},
)
REFUND = answer_schema(
    {
        "id": UUID,
        "amount": AMOUNT,
        "currency": CURRENCY,
        "status": {"type": "string", "enum": ["pending", "succeeded", "failed"]},
        "reason": MAYBE_TEXT,
        "failure_code": MAYBE_TEXT,
        "failure_reason": MAYBE_TEXT,
        "requested_at": TIME,
        "decided_at": MAYBE_TIME,
    }
)
# A payment as the views show it; an answer given before the views have it (status
# "processing", with a status_url to poll) holds only the request's fields.
PAYMENT = answer_schema(
    {
        "id": UUID,
        "user_id": UUID,
        "amount": AMOUNT,
        "currency": CURRENCY,
        "payment_method_type": {"type": "string", "enum": ["wallet", "external"]},
        "wallet_id": MAYBE_UUID,
        "provider": MAYBE_TEXT,
        "description": MAYBE_TEXT,
        "status": {"type": "string", "description": "processing until the saga decides, then e.g. completed or failed"},
    },
    {
        "reason_code": MAYBE_TEXT,
        "reason": MAYBE_TEXT,
        "refunded_amount": COUNT,
        "created_at": TIME,
        "updated_at": TIME,
        "deadline_at": {
            **MAYBE_TIME,
            "description": "an external payment fails provider_timeout if still processing then",
        },
        "operations": {"type": "array", "items": OPERATION},
        "refunds": {"type": "array", "items": REFUND},
        "status_url": TEXT,
    },
)
REFUND_ACCEPTED = answer_schema(
    {
        "refund_id": UUID,
        "payment_id": UUID,
        "amount": AMOUNT,
        "currency": CURRENCY,
        "status": {"type": "string", "description": "pending when accepted; its outcome once replayed"},
        "status_url": TEXT,
    }
)
WEBHOOK_RECEIVED = answer_schema(
    {"received": {"type": "boolean", "const": True}},
    {"ignored": {"type": "string", "description": "why nothing was published (an event type we do not act on)"}},
)

WALLET = answer_schema(
    {"id": UUID, "balance": COUNT, "currency": CURRENCY, "user_id": UUID, "last_updated": TIME, "version": COUNT}
)
WALLET_OPENED = answer_schema({"id": UUID, "user_id": UUID, "currency": CURRENCY, "balance": COUNT})
MOVEMENT = answer_schema(
    {
        "id": UUID,
        "type": {"type": "string", "enum": ["income", "expense"]},
        "amount": AMOUNT,
        "currency": CURRENCY,
        "wallet_id": UUID,
        "created_at": TIME,
        "status": {"type": "string", "enum": ["applied", "rejected"]},
        "reason_code": MAYBE_TEXT,
        "balance_after": {"type": ["integer", "null"], "minimum": 0},
        "reverts_movement_id": MAYBE_UUID,
        "reference": MAYBE_TEXT,
        "description": MAYBE_TEXT,
        "payment_id": MAYBE_UUID,
    }
)
MOVEMENT_PAGE = answer_schema({"data": {"type": "array", "items": MOVEMENT}, "has_more": {"type": "boolean"}})
