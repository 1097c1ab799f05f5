"""Strict JSON and text for request input: what Python lets through and storage must not.

`json.loads` takes the last of duplicate keys, accepts NaN and Infinity, raises ValueError
on integers past 4300 digits and RecursionError on deep nesting; Python strings hold NUL
and lone surrogates that PostgreSQL (or any UTF-8 encoder) refuses later. Here each of
these is a refusal the caller is told about, before anything is stored or published.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

MAX_DEPTH = 32  # our deepest document (a webhook) is 3 levels
MAX_INT_DIGITS = 32  # the largest amount, 10**15, has 16; nothing we accept needs more

# A string token is skipped whole (brackets inside it do not count); brackets are counted.
_TOKENS = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')
_CONTROLS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff"
# Tab, line feed and carriage return are text in a multi-line note; every other C0/C1
# control and any lone surrogate is not: NUL cannot be stored, the rest are terminal or
# log injection at best, and a lone surrogate cannot be encoded as UTF-8 at all.
_NOT_TEXT = re.compile(f"[{_CONTROLS}]")
_NOT_ONE_LINE = re.compile(f"[{_CONTROLS}\t\n\r]")


class JsonRefused(ValueError):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


class OversizedInt:
    """Stands for an integer literal too long to be any value of ours, so that the field
    check refuses it with the field's name instead of the parser failing anonymously."""

    def __repr__(self) -> str:
        return "<integer with too many digits>"


OVERSIZED_INT = OversizedInt()


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _bounded_int(literal: str) -> int | OversizedInt:
    return int(literal) if len(literal.lstrip("-")) <= MAX_INT_DIGITS else OVERSIZED_INT


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def nests_deeper_than(raw: bytes, limit: int) -> bool:
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for token in _TOKENS.finditer(raw):
        bracket = token.group()
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif bracket in (b"]", b"}"):
            depth -= 1
    return False


def parse_json(raw: bytes) -> Any:
    """The document, or JsonRefused naming what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonRefused("invalid_encoding", "the body is not valid UTF-8") from None
    if nests_deeper_than(raw, MAX_DEPTH):
        raise JsonRefused("too_deep", f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_int=_bounded_int, parse_constant=_no_constant)
    except _DuplicateKey as exc:
        raise JsonRefused("duplicate_key", f"key {exc.key!r} appears more than once", exc.key) from None
    except (ValueError, RecursionError):
        raise JsonRefused("malformed_json", "the body is not valid JSON") from None


def text_problem(value: str, multiline: bool) -> str | None:
    """What makes `value` unfit to store as text, or None."""
    found = (_NOT_TEXT if multiline else _NOT_ONE_LINE).search(value)
    if found is None:
        return None
    char = found.group()
    return "a lone surrogate" if "\ud800" <= char <= "\udfff" else f"the control character U+{ord(char):04X}"


def is_header_token(value: str) -> bool:
    """Printable ASCII only: header bytes outside it reach us as surrogate escapes."""
    return value.isascii() and value.isprintable()


# ISO 8601 in ASCII: fromisoformat would also take other scripts' digits. A '+' sent unencoded
# in a query string arrives as a space, which this refuses.
_INSTANT = re.compile(r"[0-9]{4}-[0-9T:.,+Zz-]{1,35}")


def parse_instant(text: str) -> dt.datetime | None:
    """An ISO 8601 time that gives its UTC offset, as UTC; None for anything else."""
    if not _INSTANT.fullmatch(text):
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
        return moment.astimezone(dt.UTC) if moment.tzinfo is not None else None
    except (ValueError, OverflowError):  # not a time; or a year-1 time east of UTC, before year 1 in UTC
        return None
