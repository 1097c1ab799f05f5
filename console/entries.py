"""The console's pure part: log messages as entries, a payment's timeline and verdict, and how
each is printed (text or JSON lines)."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from connectors.avro import Codec, EventDecodeError
from connectors.topics import (
    ALL_TOPICS,
    EXTERNAL_PROVIDER_EVENTS,
    PAYMENT_CREATED,
    PAYMENT_DLQ,
    PAYMENT_FAILED,
    PAYMENT_OPERATION_COMPLETED,
    PAYMENT_OPERATION_INCONSISTENT,
    PAYMENT_REFUND_FAILED,
    PAYMENT_REFUND_REQUESTED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCEEDED,
    WALLET_BALANCE_UPDATE,
    WALLET_MOVEMENT_REQUIRED,
    WALLET_MOVEMENT_UPDATES,
    WALLET_PAYMENT_OPERATIONS,
)
from connectors.tracing import TRACEPARENT_HEADER, header_value, request_id_from_headers, trace_id_of
from domain.payment import REFUND_ENDINGS, SAGA_ENDINGS

# A trace is complete once its payment's saga ended and each of its refunds did.
CLOSING_EVENTS = (*SAGA_ENDINGS, *REFUND_ENDINGS)
WALLET_TOPICS = (WALLET_MOVEMENT_REQUIRED.name, WALLET_MOVEMENT_UPDATES.name, WALLET_BALANCE_UPDATE.name)
PAYMENT_TOPICS = frozenset(t.name for t in ALL_TOPICS if t.key == "payment_id")
# Causal order of a payment's hops: breaks ties between events stamped in the same millisecond.
FLOW_ORDER = (
    PAYMENT_CREATED.name,
    PAYMENT_REFUND_REQUESTED.name,
    WALLET_MOVEMENT_REQUIRED.name,
    EXTERNAL_PROVIDER_EVENTS.name,
    WALLET_MOVEMENT_UPDATES.name,
    WALLET_BALANCE_UPDATE.name,
    WALLET_PAYMENT_OPERATIONS.name,
    PAYMENT_OPERATION_COMPLETED.name,
    PAYMENT_OPERATION_INCONSISTENT.name,
    PAYMENT_SUCCEEDED.name,
    PAYMENT_FAILED.name,
    PAYMENT_REFUNDED.name,
    PAYMENT_REFUND_FAILED.name,
    PAYMENT_DLQ.name,
)
DETAIL_FIELDS = (
    "status",
    "amount",
    "expected_amount",
    "reason_code",
    "reason",
    "refund_id",
    "movement_id",
    "wallet_id",
    "payment_id",
)

# What links a payment's events to the provider's objects, and until when it waits on them.
REFERENCE_FIELDS = {
    "PaymentCreated": ("deadline_at",),
    "PaymentOperationPending": ("operation_id", "reference", "deadline_at"),
    "PaymentOperationCompleted": ("operation_id", "reference"),
    "PaymentOperationInconsistent": ("operation_id", "reference"),
    "ProviderUpdate": ("operation_id", "provider_reference"),
}


@dataclass(frozen=True)
class Entry:
    """One message of the log, decoded when possible."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # Kafka record timestamp, epoch ms
    key: str | None
    raw: bytes
    event: dict[str, Any] | None = None
    error: str | None = None
    trace_id: str | None = None
    inner: dict[str, Any] | None = None  # a DeadLetter's original event, when decodable
    request_id: str | None = None  # the X-Request-Id of the request that caused it

    @property
    def event_type(self) -> str:
        return str(self.event["envelope"]["event_type"]) if self.event else "<undecodable>"

    @property
    def correlation_id(self) -> str | None:
        return str(self.event["envelope"]["correlation_id"]) if self.event else None

    def get(self, name: str) -> Any:
        return (self.event or {}).get(name)


def key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return "0x" + key.hex()


def to_entry(
    codec: Codec,
    topic: str,
    partition: int,
    offset: int,
    timestamp: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] = (),
) -> Entry:
    raw = value or b""
    traceparent = header_value(headers, TRACEPARENT_HEADER)
    event, error, inner = None, None, None
    try:
        event = codec.decode(raw)
    except EventDecodeError as exc:
        error = str(exc)
    if event is not None and event["envelope"]["event_type"] == "DeadLetter":
        try:
            inner = codec.decode(event["value"])
        except EventDecodeError:
            inner = None
    trace_id, request_id = trace_id_of(traceparent), request_id_from_headers(headers)
    return Entry(topic, partition, offset, timestamp, key_text(key), raw, event, error, trace_id, inner, request_id)


def sort_key(entry: Entry) -> tuple[int, int, int, str, int, int]:
    occurred = int(entry.event["envelope"]["occurred_at"]) if entry.event else entry.timestamp
    rank = FLOW_ORDER.index(entry.topic) if entry.topic in FLOW_ORDER else len(FLOW_ORDER)
    return (entry.timestamp, occurred, rank, entry.topic, entry.partition, entry.offset)


def timeline(entries: Iterable[Entry]) -> list[Entry]:
    """Time order, each message once (a partition may have been read twice)."""
    unique = {(e.topic, e.partition, e.offset): e for e in entries}
    return sorted(unique.values(), key=sort_key)


def hops(entries: Sequence[Entry]) -> list[int | None]:
    return [None if i == 0 else e.timestamp - entries[i - 1].timestamp for i, e in enumerate(entries)]


def is_about(entry: Entry, ident: str, wallets: set[str], movement_ids: set[str]) -> bool:
    """Keyed by the id, or an event on a wallet's partitions that belongs to payment `ident`."""
    if entry.key == ident:
        return True
    if entry.key not in wallets:
        return False
    if entry.inner is not None:
        return entry.inner.get("payment_id") == ident
    if entry.get("payment_id") == ident:
        return True
    # BalanceUpdated names the movement, not the payment.
    return entry.topic == WALLET_BALANCE_UPDATE.name and entry.get("movement_id") in movement_ids


def wallets_named(entries: Iterable[Entry], ident: str) -> set[str]:
    """Wallets a payment's own events name: their wallet partitions carry its movements."""
    return {
        str(e.get("wallet_id"))
        for e in entries
        if e.key == ident and e.topic in PAYMENT_TOPICS and e.get("wallet_id") and e.get("wallet_id") != ident
    }


def movements_of(entries: Iterable[Entry], ident: str) -> set[str]:
    return {str(e.get("movement_id")) for e in entries if e.get("payment_id") == ident and e.get("movement_id")}


def is_payment(entries: Iterable[Entry]) -> bool:
    return any(e.topic in PAYMENT_TOPICS for e in entries)


def verdict(entries: Sequence[Entry], now_ms: int | None = None) -> tuple[bool, str]:
    """(terminal?, sentence) for a payment's timeline, judged at `now_ms` (epoch ms, default now)."""
    if not entries:
        return False, "no events found"
    last = entries[-1]
    terminals = [i for i, e in enumerate(entries) if e.event_type in CLOSING_EVENTS]
    # A refund request reopens a finished payment until that refund's outcome arrives.
    decided = {e.get("refund_id") for e in entries if e.event_type in REFUND_ENDINGS}
    open_refunds = [e.get("refund_id") for e in entries if e.event_type == "RefundRequested"]
    reopened = any(refund_id not in decided for refund_id in open_refunds)
    if terminals and not reopened:
        end = entries[terminals[-1]]
        return True, f"reached terminal {end.event_type} on {end.topic}"
    waiting = waiting_on_provider(entries)
    if waiting is not None:
        return False, waiting_sentence(waiting, int(time.time() * 1000) if now_ms is None else now_ms)
    stopped = f"stopped after {last.event_type} on {last.topic}, not terminal"
    created = next((e for e in entries if e.event_type == "PaymentCreated"), None)
    if created is not None and created.get("deadline_at") is not None:
        # An external payment with no pending answer: the provider never accepted the charge.
        stopped += f"; no answer from the provider recorded, deadline {fmt_time(created.get('deadline_at'))}"
    return False, stopped


OPERATION_OUTCOMES = ("PaymentOperationCompleted", "PaymentOperationInconsistent")


def waiting_on_provider(entries: Sequence[Entry]) -> Entry | None:
    """The latest provider's pending answer (PaymentOperationPending) no outcome of the same
    operation has followed: what the payment waits for."""
    decided = {e.get("operation_id") for e in entries if e.event_type in OPERATION_OUTCOMES}
    pending = [e for e in entries if e.event_type == "PaymentOperationPending" and e.get("operation_id") not in decided]
    return pending[-1] if pending else None


def waiting_sentence(pending: Entry, now_ms: int) -> str:
    what = (
        f"{pending.get('kind')} {pending.get('reference')} at {pending.get('provider')} "
        f"(operation {pending.get('operation_id')}, {pending.get('provider_status')})"
    )
    until = pending.get("deadline_at")
    if until is None:
        return f"waiting for the provider's webhook, with no deadline: {what}"
    sentence = f"waiting for the provider's webhook until {fmt_time(until)}: {what}"
    if now_ms >= until:
        sentence += (
            f"; the deadline passed {fmt_duration(now_ms - until)} ago and the payment worker has not failed it yet"
        )
    return sentence


def fmt_time(millis: int) -> str:
    return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def fmt_duration(millis: int) -> str:
    if abs(millis) < 1000:
        return f"{millis} ms"
    if abs(millis) < 60_000:
        return f"{millis / 1000:.3f} s"
    return f"{millis // 60_000} min {millis % 60_000 / 1000:.1f} s"


def details(entry: Entry) -> dict[str, Any]:
    """The fields an operator looks at first, flattened."""
    if entry.event is None:
        return {"error": entry.error, "value": preview(entry.raw)}
    event = entry.event
    out: dict[str, Any] = {}
    for name in DETAIL_FIELDS:
        value = event.get(name)
        if name in ("amount", "expected_amount") and isinstance(value, dict):
            value = f"{value['amount']} {value['currency']}"
        if value is not None:
            out[name] = value
    if entry.event_type == "BalanceUpdated":
        out["balance"] = f"{event['balance']['amount']} {event['balance']['currency']}"
        out["version"] = event["version"]
    for name in REFERENCE_FIELDS.get(entry.event_type, ()):
        if event.get(name) is not None:
            out[name] = fmt_time(event[name]) if name == "deadline_at" else event[name]
    if entry.event_type == "PaymentOperationCompleted" and event.get("failure_code"):
        out["reason_code"], out["reason"] = event["failure_code"], event["failure_reason"]
    if entry.event_type == "DeadLetter":
        out["reason"] = f"{event['error_type']}: {event['error_message']}"
        out["source"] = f"{event['source_topic']}[{event['source_partition']}]@{event['source_offset']}"
        out["consumer"] = event["consumer"]
        out["original"] = entry.inner["envelope"]["event_type"] if entry.inner else preview(event["value"])
    return out


def preview(data: bytes, limit: int = 24) -> str:
    return f"{len(data)} bytes {data[:limit].hex()}{'...' if len(data) > limit else ''}"


def format_entry(entry: Entry, hop: int | None) -> str:
    where = f"{entry.topic}[{entry.partition}]@{entry.offset}"
    # An id equal to the key is already on the line.
    fields = " ".join(f"{k}={v}" for k, v in details(entry).items() if v != entry.key)
    ids = f"key={entry.key} corr={entry.correlation_id or '-'}"
    if entry.trace_id:
        ids += f" trace={entry.trace_id}"
    if entry.request_id:
        ids += f" request={entry.request_id}"
    step = "" if hop is None else "+" + fmt_duration(hop)
    return f"{fmt_time(entry.timestamp)} {step:>12}  {where:<42} {entry.event_type:<28} {fields}  {ids}"


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def entry_json(entry: Entry, hop: int | None) -> str:
    record = {
        "time": fmt_time(entry.timestamp),
        "timestamp_ms": entry.timestamp,
        "hop_ms": hop,
        "topic": entry.topic,
        "partition": entry.partition,
        "offset": entry.offset,
        "event_type": entry.event_type,
        "key": entry.key,
        "correlation_id": entry.correlation_id,
        "trace_id": entry.trace_id,
        "request_id": entry.request_id,
        "details": details(entry),
        "event": entry.event,
        "error": entry.error,
        "value_hex": entry.raw.hex() if entry.event is None else None,
    }
    return json.dumps(jsonable(record), sort_keys=False)


def summary_lines(ident: str, entries: Sequence[Entry]) -> list[str]:
    if not entries:
        return [f"no events about {ident} (looked at every topic on the partition its key maps to)"]
    total = entries[-1].timestamp - entries[0].timestamp
    topics = len({e.topic for e in entries})
    lines = [f"{len(entries)} events on {topics} topics over {fmt_duration(total)}"]
    if is_payment(entries):
        lines.append(f"payment {ident}: {verdict(entries)[1]}")
    return lines


def summary_json(ident: str, entries: Sequence[Entry]) -> str:
    record: dict[str, Any] = {"summary": {"id": ident, "events": len(entries)}}
    if entries:
        record["summary"]["duration_ms"] = entries[-1].timestamp - entries[0].timestamp
    if is_payment(entries):
        terminal, text = verdict(entries)
        record["summary"].update(kind="payment", terminal=terminal, verdict=text)
        waiting = None if terminal else waiting_on_provider(entries)
        if waiting is not None:
            record["summary"]["waiting_on_provider"] = {
                name: waiting.get(name) for name in ("operation_id", "kind", "provider", "reference", "deadline_at")
            }
    return json.dumps(record)


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_since(text: str, now_ms: int | None = None) -> int:
    """'5m', '90s', '2h', '1d' ago, or an ISO-8601 time (UTC when no zone given), as epoch ms."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    match = _RELATIVE.match(text.strip())
    if match:
        return now_ms - int(float(match.group(1)) * _UNIT_MS[match.group(2)])
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r}: give a duration ago (30s, 5m, 2h, 1d) or an ISO-8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


class Printer:
    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out, self.as_json = out, as_json
        self.previous: Entry | None = None

    def entry(self, entry: Entry) -> None:
        hop = None if self.previous is None else entry.timestamp - self.previous.timestamp
        print(entry_json(entry, hop) if self.as_json else format_entry(entry, hop), file=self.out, flush=True)
        self.previous = entry
