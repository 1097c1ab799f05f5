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
# The id of the HTTP request that caused the work in hand (X-Request-Id at the edge), carried
# beside the traceparent on every event a step produces, so an operator's id finds the payment.
REQUEST_ID_EVENT_HEADER = "request_id"
_FORMAT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

current_traceparent: ContextVar[str | None] = ContextVar("traceparent", default=None)
current_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
# The authenticated subject of the request in hand, or the actor an event acts for.
current_caller: ContextVar[str | None] = ContextVar("caller", default=None)


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


def header_value(headers: object, name: str) -> str | None:
    """One header's text among Kafka headers (a list of (key, bytes) or a mapping)."""
    items = headers.items() if isinstance(headers, dict) else (headers or [])
    for key, value in items:  # type: ignore[attr-defined]
        if key == name and value:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


def from_headers(headers: object) -> str | None:
    """The traceparent among Kafka headers."""
    return header_value(headers, TRACEPARENT_HEADER)


def request_id_from_headers(headers: object) -> str | None:
    """The request id among Kafka headers, if it is one a caller could have sent."""
    value = header_value(headers, REQUEST_ID_EVENT_HEADER)
    return value if value is not None and is_request_id(value) else None


def is_request_id(value: str) -> bool:
    """An id kept as given: short, and nothing that could forge a log line or a header."""
    return REQUEST_ID_FORMAT.fullmatch(value) is not None


REQUEST_ID_FORMAT = re.compile(r"[A-Za-z0-9._-]{8,64}")


def outgoing_headers() -> list[tuple[str, bytes]]:
    """Headers for a message published now: the span in hand becomes its consumer's parent,
    and the request id goes along unchanged."""
    headers = []
    traceparent = current_traceparent.get()
    if traceparent is not None:
        headers.append((TRACEPARENT_HEADER, traceparent.encode()))
    request_id = current_request_id.get()
    if request_id is not None:
        headers.append((REQUEST_ID_EVENT_HEADER, request_id.encode()))
    return headers


log_fields: ContextVar[dict[str, str]] = ContextVar("log_fields", default={})  # noqa: B039 - never mutated


def fields_of(event: dict[str, object]) -> dict[str, str]:
    """The ids a log line about this event should carry."""
    envelope = event.get("envelope")
    fields = {"event_id": envelope["event_id"]} if isinstance(envelope, dict) else {}
    if isinstance(envelope, dict) and isinstance(envelope.get("actor_subject"), str):
        fields["caller"] = envelope["actor_subject"]  # whom the step acts for
    for name in ("payment_id", "wallet_id", "movement_id"):
        value = event.get(name)
        if isinstance(value, str):
            fields[name] = value
    return fields
