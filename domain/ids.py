"""Deterministic ids: whatever is caused by the same thing gets the same id,
so a retry or a redelivery names the same debit, event or refund."""

from __future__ import annotations

import json
import uuid

NAMESPACE = uuid.UUID("6f2b1c1e-8f1a-5d7e-9a51-7d3a2b9c0e11")


def derive_id(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


def is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def keyed_id(kind: str, caller: str, key: str, generation: int, *scope: str) -> str:
    """The id a request with an Idempotency-Key names: the caller's own (another caller's
    same key names something else), and new for each generation of the key (one used
    again after it expired starts a new request). JSON keeps the parts apart whatever
    characters a key or subject holds."""
    return derive_id(kind, json.dumps([caller, key, generation, *scope]))
