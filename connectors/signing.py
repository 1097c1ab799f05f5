"""Webhook signatures: HMAC-SHA256 over "timestamp.body", checked in constant time
with a freshness tolerance, so a captured webhook cannot be replayed later."""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "Provider-Timestamp"
SIGNATURE_HEADER = "Provider-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(
    secret: str, timestamp: str | None, signature: str | None, body: bytes, now: int, tolerance_s: int
) -> str | None:
    """None when authentic and fresh; otherwise why not (never which part of the signature differed)."""
    if not timestamp or not signature:
        return "missing signature headers"
    # ASCII digits only: int() would also read " 17", Arabic-Indic digits or thousands of digits.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return "malformed timestamp"
    if not (signature.isascii() and signature.isprintable()):  # compare_digest refuses other text
        return "malformed signature"
    sent_at = int(timestamp)
    if abs(now - sent_at) > tolerance_s:
        return "timestamp outside the tolerance"
    if not hmac.compare_digest(sign(secret, sent_at, body), signature):
        return "bad signature"
    return None
