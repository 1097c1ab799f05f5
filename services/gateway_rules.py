"""The gateway's decisions as pure functions: which path a request names, which credential
it carries, whether it asks to wait, and how many waits a credential may park.

The gateway decides on exactly what it forwards: the path is decoded once here, refused if
any reading of it could differ (encoded dots, slashes or backslashes, dot segments, controls),
and the canonical result is both routed and sent upstream.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from services.http import ApiError

# RFC 3986 pchar without pct-encoded: what a segment may hold after decoding. Every one of
# them is sent as is, so the re-encoded path is the decoded one, byte for byte.
SEGMENT_SAFE = "-._~!$&'()*+,;=:@"
SEGMENT = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@]+")
# Escapes whose decoding changes how the path splits or what it means: dot, slash,
# backslash, percent (a second decoding upstream) and the C0 controls and DEL.
FORBIDDEN_ESCAPE = re.compile(r"%(2e|2f|5c|25|[01][0-9a-f]|7f)", re.IGNORECASE)
MALFORMED_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")
ZERO = re.compile(r"0+(\.0+)?")


def _bad_path(message: str) -> ApiError:
    return ApiError(400, "invalid_path", message, "path")


def canonical_path(raw: str) -> str:
    """The one decoded path a raw request path names, or ApiError (400, field "path")."""
    if not raw.startswith("/"):
        raise _bad_path("the path must start with /")
    if not (raw.isascii() and raw.isprintable()) or " " in raw:
        raise _bad_path("the path must be printable ASCII without spaces")
    if "\\" in raw:
        raise _bad_path("the path must not contain a backslash")
    if FORBIDDEN_ESCAPE.search(raw):
        raise _bad_path("the path must not encode '.', '/', '\\', '%' or a control character")
    if MALFORMED_ESCAPE.search(raw):
        raise _bad_path("every '%' in the path must start an escape of two hex digits")
    try:
        decoded = unquote(raw, errors="strict")  # once; nothing is left to decode after this
    except UnicodeDecodeError:
        raise _bad_path("the path's escapes must decode to UTF-8") from None
    for segment in decoded[1:].split("/"):
        if segment in ("", ".", ".."):
            raise _bad_path("the path must not hold empty, '.' or '..' segments")
        if not SEGMENT.fullmatch(segment):
            raise _bad_path("the path holds characters outside letters, digits and -._~!$&'()*+,;=:@")
    return decoded


def encoded_path(canonical: str) -> str:
    """The canonical path as sent upstream: the same characters, so the same path."""
    return quote(canonical, safe="/" + SEGMENT_SAFE)


def single_header(values: Sequence[str], name: str) -> str | None:
    """The header's one value, None when absent; ApiError when sent more than once, since
    the gateway and a service may not pick the same one."""
    if len(values) > 1:
        raise ApiError(400, "invalid_header", f"send {name} at most once", name)
    return values[0] if values else None


def asks_to_wait(waits: Sequence[str]) -> bool:
    """Whether a read may park (?wait=N above zero). Anything but a plain zero counts: a value
    the API will refuse costs a slot for a moment, a wait counted as ordinary would not."""
    return any(not ZERO.fullmatch(value) for value in waits)


@dataclass
class WaitSlots:
    """Long-polls parked at once: at most `per_credential` for each credential and `total` in
    all (the long-poll connections), so one caller cannot hold what every other one needs."""

    per_credential: int
    total: int
    held: dict[str, int] = field(default_factory=dict)
    parked: int = 0

    def take(self, credential: str) -> ApiError | None:
        """None when the credential may park one more wait (and it now holds it)."""
        mine = self.held.get(credential, 0)
        if mine >= self.per_credential:
            message = f"at most {self.per_credential} waiting reads per credential; retry later"
            return ApiError(429, "too_many_waits", message, "wait", {"Retry-After": "1"})
        if self.parked >= self.total:
            message = "the gateway holds as many waiting reads as it can; retry later"
            return ApiError(503, "overloaded", message, "wait", {"Retry-After": "1"})
        self.held[credential] = mine + 1
        self.parked += 1
        return None

    def give_back(self, credential: str) -> None:
        self.parked -= 1
        left = self.held.get(credential, 0) - 1
        if left > 0:
            self.held[credential] = left
        else:
            self.held.pop(credential, None)
