"""Deterministic ids: whatever is caused by the same thing gets the same id,
so a retry or a redelivery names the same debit, event or refund."""

from __future__ import annotations

import hashlib
import json
import re
import uuid

NAMESPACE = uuid.UUID("6f2b1c1e-8f1a-5d7e-9a51-7d3a2b9c0e11")


_NAMESPACE_BYTES = NAMESPACE.bytes
# The canonical text form, the only one accepted: str(UUID(x)) == x.lower() holds for exactly these.
_CANONICAL = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def derive_id(*parts: str) -> str:
    """uuid.uuid5(NAMESPACE, "/".join(parts)) as text, without building the UUID object: every
    event a request or a step writes derives its id here."""
    digest = int.from_bytes(hashlib.sha1(_NAMESPACE_BYTES + "/".join(parts).encode()).digest()[:16])
    return uuid_text(digest, 5)


def uuid_text(bits: int, version: int) -> str:
    """str(uuid.UUID(int=bits, version=version)), without the object."""
    bits = bits & ~(0xF000 << 64) & ~(0xC000 << 48) | (version << 76) | (0x8000 << 48)
    text = f"{bits:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and _CANONICAL.fullmatch(value) is not None


def keyed_id(kind: str, caller: str, key: str, generation: int, *scope: str) -> str:
    """The id a request with an Idempotency-Key names: the caller's own (another caller's
    same key names something else), and new for each generation of the key (one used
    again after it expired starts a new request). JSON keeps the parts apart whatever
    characters a key or subject holds."""
    return derive_id(kind, json.dumps([caller, key, generation, *scope]))
