"""W3C trace context carried from the HTTP request through every Kafka hop.

The `traceparent` of the work in hand lives in a context variable: the HTTP
middleware sets it from the request (or starts a trace), the agents set it from the
consumed message's headers, and every publish adds a child of it to its headers.
So one trace id covers a whole payment, across services and topics.
"""

from __future__ import annotations

import random
import re
from contextvars import ContextVar

TRACEPARENT_HEADER = "traceparent"
_FORMAT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

current_traceparent: ContextVar[str | None] = ContextVar("traceparent", default=None)


def new_traceparent(trace_id: str | None = None) -> str:
    # W3C asks for unique ids, not secret ones; the OS's entropy pool cost 1.5 % of a worker's CPU.
    return f"00-{trace_id or f'{random.getrandbits(128) or 1:032x}'}-{random.getrandbits(64) or 1:016x}-01"


def trace_id_of(traceparent: str | None) -> str | None:
    match = _FORMAT.match(traceparent or "")
    if match is None or match.group(1) == "0" * 32:
        return None
    return match.group(1)


def continue_or_start(traceparent: str | None) -> str:
    """A child span of a valid incoming traceparent, or a new trace."""
    return new_traceparent(trace_id_of(traceparent))


def from_headers(headers: object) -> str | None:
    """The traceparent among Kafka headers (a list of (key, bytes) or a mapping)."""
    items = headers.items() if isinstance(headers, dict) else (headers or [])
    for key, value in items:  # type: ignore[attr-defined]
        if key == TRACEPARENT_HEADER and value:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def outgoing_headers() -> list[tuple[str, bytes]]:
    """Headers for a message published now: the span in hand becomes its consumer's parent."""
    traceparent = current_traceparent.get()
    if traceparent is None:
        return []
    return [(TRACEPARENT_HEADER, traceparent.encode())]


log_fields: ContextVar[dict[str, str]] = ContextVar("log_fields", default={})  # noqa: B039 - never mutated


def fields_of(event: dict[str, object]) -> dict[str, str]:
    """The ids a log line about this event should carry."""
    envelope = event.get("envelope")
    fields = {"event_id": envelope["event_id"]} if isinstance(envelope, dict) else {}
    for name in ("payment_id", "wallet_id", "movement_id"):
        value = event.get(name)
        if isinstance(value, str):
            fields[name] = value
    return fields
