"""The operator's console: where is a payment and why, straight from the log.

    payments trace ID [--follow] [--json] [--since-hours H]
    payments tail TOPIC [--from-beginning | --offset N | --since 5m] [--key KEY] [--json] [--max N]
    payments dlq list [--json]
    payments dlq replay OFFSET... [--partition P] | --all
    payments rebuild [--compare-only] [--keep]

The log is the source of truth, so everything here reads Kafka directly and
never trusts the views; `rebuild` checks the views against the log.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from connectors.avro import Codec, EventDecodeError, make_codec
from connectors.config import Config, ConfigError, load_config
from connectors.log_reader import partition_for
from connectors.projections import VIEW_TABLES, Projection, ProjectionNotReady
from connectors.topics import (
    ALL_TOPICS,
    EXTERNAL_PROVIDER_EVENTS,
    PAYMENT_CREATED,
    PAYMENT_DLQ,
    PAYMENT_FAILED,
    PAYMENT_OPERATION_COMPLETED,
    PAYMENT_OPERATION_INCONSISTENT,
    PAYMENT_REFUND,
    PAYMENT_REFUND_FAILED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCESS,
    WALLET_BALANCE_UPDATE,
    WALLET_MOVEMENT_REQUIRED,
    WALLET_MOVEMENT_UPDATES,
)
from connectors.tracing import TRACEPARENT_HEADER, trace_id_of

TERMINAL = ("PaymentSucceeded", "PaymentFailed", "PaymentRefunded", "RefundFailed")
REFUND_OUTCOMES = ("PaymentRefunded", "RefundFailed")
WALLET_TOPICS = (WALLET_MOVEMENT_REQUIRED.name, WALLET_MOVEMENT_UPDATES.name, WALLET_BALANCE_UPDATE.name)
PAYMENT_TOPICS = frozenset(t.name for t in ALL_TOPICS if t.key == "payment_id")
# Causal order of a payment's hops: breaks ties between events stamped in the same millisecond.
FLOW_ORDER = (
    PAYMENT_CREATED.name,
    PAYMENT_REFUND.name,
    WALLET_MOVEMENT_REQUIRED.name,
    EXTERNAL_PROVIDER_EVENTS.name,
    WALLET_MOVEMENT_UPDATES.name,
    WALLET_BALANCE_UPDATE.name,
    PAYMENT_OPERATION_COMPLETED.name,
    PAYMENT_OPERATION_INCONSISTENT.name,
    PAYMENT_SUCCESS.name,
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
REPLAY_HEADER = "dlq-replay"


class ConsoleError(Exception):
    """Something the operator can fix; the message says how."""


# --- pure: entries, timelines, formatting -------------------------------------------


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
    traceparent = next((v.decode(errors="replace") for k, v in headers or () if k == TRACEPARENT_HEADER), None)
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
    return Entry(topic, partition, offset, timestamp, key_text(key), raw, event, error, trace_id_of(traceparent), inner)


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


def verdict(entries: Sequence[Entry]) -> tuple[bool, str]:
    """(terminal?, sentence) for a payment's timeline."""
    if not entries:
        return False, "no events found"
    last = entries[-1]
    terminals = [i for i, e in enumerate(entries) if e.event_type in TERMINAL]
    # A refund request reopens a finished payment until that refund's outcome arrives.
    decided = {e.get("refund_id") for e in entries if e.event_type in REFUND_OUTCOMES}
    open_refunds = [e.get("refund_id") for e in entries if e.event_type == "RefundRequested"]
    reopened = any(refund_id not in decided for refund_id in open_refunds)
    if terminals and not reopened:
        end = entries[terminals[-1]]
        return True, f"reached terminal {end.event_type} on {end.topic}"
    return False, f"stopped after {last.event_type} on {last.topic}, not terminal"


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


# --- Kafka ------------------------------------------------------------------------------


def kafka_hint(config: Config) -> str:
    return (
        f"cannot reach Kafka at {config.kafka.bootstrap_servers} (ENVIRONMENT={config.environment}): "
        "start it with `make run` (or set ENVIRONMENT to the environment you mean)"
    )


class Log:
    """An assign-only consumer: no group, commits nothing, disturbs no one."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.codec = make_codec(config.kafka.schema_registry_url or None)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=config.kafka.bootstrap_servers,
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
            request_timeout_ms=10_000,
        )
        self.assigned: dict[TopicPartition, None] = {}  # insertion-ordered set
        self._position: dict[TopicPartition, int] = {}
        self.cluster: Any = None

    async def __aenter__(self) -> Log:
        try:
            await asyncio.wait_for(self.consumer.start(), 15)
            # topics() would not update partitions_for_topic(); keep the metadata ourselves.
            self.cluster = await self.consumer._client.fetch_all_metadata()
        except (KafkaConnectionError, TimeoutError) as exc:
            await self.consumer.stop()
            raise ConsoleError(kafka_hint(self.config)) from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    def partitions(self, topic: str) -> list[int]:
        found = self.cluster.partitions_for_topic(topic)
        if not found:
            raise ConsoleError(
                f"topic {topic!r} does not exist on {self.config.kafka.bootstrap_servers}: "
                "`make run` (devtools.devctl setup) creates every topic"
            )
        return sorted(found)

    def key_partition(self, topic: str, key: str) -> TopicPartition:
        return TopicPartition(topic, partition_for(key, len(self.partitions(topic))))

    async def offsets_at(self, tps: Iterable[TopicPartition], since_ms: int | None) -> dict[TopicPartition, int]:
        tps = list(tps)
        if since_ms is None:
            return dict(await self.consumer.beginning_offsets(tps))
        found = await self.consumer.offsets_for_times({tp: since_ms for tp in tps})
        ends = await self.consumer.end_offsets(tps)
        return {tp: found[tp].offset if found.get(tp) else ends[tp] for tp in tps}

    async def ends(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return dict(await self.consumer.end_offsets(list(tps)))

    def add(self, starts: dict[TopicPartition, int]) -> None:
        """Read these partitions from these offsets too, keeping where the others stand."""
        # assign() forgets every position, so re-seek the partitions already being read.
        keep = {tp: self._position.get(tp, 0) for tp in self.assigned if tp not in starts}
        for tp in starts:
            self.assigned[tp] = None
        self.consumer.assign(list(self.assigned))
        for tp, offset in {**keep, **starts}.items():
            self.consumer.seek(tp, offset)
            self._position[tp] = offset

    async def fetch(self, timeout_ms: int = 500) -> list[Entry]:
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=2000)
        out = []
        for tp, records in batches.items():
            for r in records:
                out.append(to_entry(self.codec, r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, r.headers))
                self._position[tp] = r.offset + 1
        return out

    async def read(self, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int]) -> AsyncIterator[Entry]:
        """Every message from starts up to (not including) ends, then stop."""
        pending = {tp for tp in starts if ends[tp] > starts[tp]}
        self.assigned.clear()
        self._position = {}
        self.add({tp: starts[tp] for tp in pending})
        while pending:
            for entry in await self.fetch():
                tp = TopicPartition(entry.topic, entry.partition)
                if entry.offset < ends[tp]:
                    yield entry
            for tp in list(pending):
                if await self.consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)


async def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


class Printer:
    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out, self.as_json = out, as_json
        self.previous: Entry | None = None

    def entry(self, entry: Entry) -> None:
        hop = None if self.previous is None else entry.timestamp - self.previous.timestamp
        print(entry_json(entry, hop) if self.as_json else format_entry(entry, hop), file=self.out, flush=True)
        self.previous = entry


# --- trace ------------------------------------------------------------------------------


async def trace(config: Config, ident: str, follow: bool, as_json: bool, since_hours: float | None, out: TextIO) -> int:
    since_ms = None if since_hours is None else int(time.time() * 1000 - since_hours * 3_600_000)
    async with Log(config) as log:
        own = [log.key_partition(t.name, ident) for t in ALL_TOPICS]
        ends = await log.ends(own)
        found = [e async for e in log.read(await log.offsets_at(own, since_ms), ends)]
        wallets = wallets_named(found, ident)
        extra = [log.key_partition(t, w) for w in sorted(wallets) for t in (*WALLET_TOPICS, PAYMENT_DLQ.name)]
        if extra:
            extra_ends = await log.ends(extra)
            found += [e async for e in log.read(await log.offsets_at(extra, since_ms), extra_ends)]
            ends.update(extra_ends)
        movements = movements_of(found, ident)
        entries = timeline(e for e in found if is_about(e, ident, wallets, movements))
        printer = Printer(out, as_json)
        if not as_json:
            kind = "payment" if is_payment(entries) else "id"
            print(f"trace of {kind} {ident} ({len(ends)} partitions read)", file=out)
        for entry in entries:
            printer.entry(entry)
        if follow:
            entries = await _follow(log, ident, wallets, movements, ends, entries, printer, out)
        if as_json:
            print(summary_json(ident, entries), file=out)
        else:
            for line in summary_lines(ident, entries):
                print(line, file=out)
    return 0


async def _follow(
    log: Log,
    ident: str,
    wallets: set[str],
    movements: set[str],
    ends: dict[TopicPartition, int],
    entries: list[Entry],
    printer: Printer,
    out: TextIO,
) -> list[Entry]:
    stop = asyncio.Event()
    await stop_on_signals(stop)
    print("following new events (Ctrl-C to stop)...", file=sys.stderr, flush=True)
    log.assigned.clear()
    log.add(ends)
    seen = list(entries)
    while not stop.is_set():
        for entry in await log.fetch():
            new_wallets = wallets_named([entry], ident) - wallets
            if new_wallets:
                wallets |= new_wallets
                tps = [log.key_partition(t, w) for w in new_wallets for t in (*WALLET_TOPICS, PAYMENT_DLQ.name)]
                # Its wallet events come after this event, so start there.
                log.add(await log.offsets_at(tps, entry.timestamp))
            movements |= movements_of([entry], ident)
            if is_about(entry, ident, wallets, movements):
                printer.entry(entry)
                seen.append(entry)
    return timeline(seen)


# --- tail -------------------------------------------------------------------------------


async def tail(
    config: Config,
    topic: str,
    start: str,
    offset: int | None,
    since: int | None,
    key: str | None,
    as_json: bool,
    limit: int | None,
    out: TextIO,
) -> int:
    async with Log(config) as log:
        tps = [log.key_partition(topic, key)] if key else [TopicPartition(topic, p) for p in log.partitions(topic)]
        if start == "beginning":
            starts = await log.offsets_at(tps, None)
        elif offset is not None:
            ends = await log.ends(tps)
            starts = {tp: min(offset, ends[tp]) for tp in tps}
        elif since is not None:
            starts = await log.offsets_at(tps, since)
        else:
            starts = await log.ends(tps)
        log.add(starts)
        where = ", ".join(f"{tp.partition}@{o}" for tp, o in sorted(starts.items()))
        print(f"tailing {topic} partitions {where} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        await stop_on_signals(stop)
        printer, shown = Printer(out, as_json), 0
        while not stop.is_set() and (limit is None or shown < limit):
            for entry in sorted(await log.fetch(), key=sort_key):
                if key is not None and entry.key != key:
                    continue
                printer.entry(entry)
                shown += 1
                if limit is not None and shown >= limit:
                    break
    return 0


# --- dead letters -----------------------------------------------------------------------


async def dead_letters(log: Log) -> list[Entry]:
    tps = [TopicPartition(PAYMENT_DLQ.name, p) for p in log.partitions(PAYMENT_DLQ.name)]
    letters = [e async for e in log.read(await log.offsets_at(tps, None), await log.ends(tps))]
    # A letter is written again when its consumer reads the log again (a projection rebuilt from
    # offset 0 refuses the same event): same id, shown once.
    seen: set[str] = set()
    unique = []
    for entry in sorted(letters, key=lambda e: (e.partition, e.offset)):
        letter_id = (entry.event or {}).get("envelope", {}).get("event_id") or f"{entry.partition}/{entry.offset}"
        if letter_id not in seen:
            seen.add(letter_id)
            unique.append(entry)
    return unique


def letter_json(entry: Entry) -> str:
    event = entry.event or {}
    return json.dumps(
        jsonable(
            {
                "partition": entry.partition,
                "offset": entry.offset,
                "time": fmt_time(entry.timestamp),
                "consumer": event.get("consumer"),
                "source_topic": event.get("source_topic"),
                "source_partition": event.get("source_partition"),
                "source_offset": event.get("source_offset"),
                "key": key_text(event.get("key")),
                "error_type": event.get("error_type"),
                "error_message": event.get("error_message") or entry.error,
                "attempts": event.get("attempts"),
                "original_event_type": entry.inner["envelope"]["event_type"] if entry.inner else None,
                "value": event.get("value"),
            }
        )
    )


def letter_lines(entry: Entry) -> list[str]:
    if entry.event is None:
        return [f"[{entry.partition}]@{entry.offset} {fmt_time(entry.timestamp)} not a DeadLetter: {entry.error}"]
    d = entry.event
    original = entry.inner["envelope"]["event_type"] if entry.inner else "undecodable " + preview(d["value"])
    return [
        f"[{entry.partition}]@{entry.offset} {fmt_time(entry.timestamp)} {d['consumer']} gave up after "
        f"{d['attempts']} attempt(s)",
        f"    reason: {d['error_type']}: {d['error_message']}",
        f"    source: {d['source_topic']}[{d['source_partition']}]@{d['source_offset']} key={key_text(d['key'])} "
        f"original={original}",
    ]


async def dlq_list(config: Config, as_json: bool, out: TextIO) -> int:
    async with Log(config) as log:
        letters = await dead_letters(log)
    if not as_json:
        print(f"{len(letters)} dead letter(s) on {PAYMENT_DLQ.name} ([partition]@offset):", file=out)
    for entry in letters:
        if as_json:
            print(letter_json(entry), file=out)
        else:
            print("\n".join(letter_lines(entry)), file=out)
    return 0


def choose_letters(letters: Sequence[Entry], offsets: Sequence[int], partition: int | None) -> list[Entry]:
    """The dead letters named by offset (and partition); an ambiguous offset is an error."""
    chosen = []
    for offset in offsets:
        matches = [e for e in letters if e.offset == offset and partition in (None, e.partition)]
        if not matches:
            where = f"partition {partition}" if partition is not None else "any partition"
            raise ConsoleError(f"no dead letter at offset {offset} on {where}: see `payments dlq list`")
        if len(matches) > 1:
            parts = ", ".join(str(e.partition) for e in matches)
            raise ConsoleError(f"offset {offset} exists on partitions {parts}: add --partition P")
        chosen.append(matches[0])
    return chosen


PROJECTOR_PREFIX = "projector:"


async def dlq_replay(config: Config, offsets: list[int], partition: int | None, replay_all: bool, out: TextIO) -> int:
    """A worker's letter goes back on its source topic (the step applies it once); a projector's
    letter is applied to its projection again, since the workers already handled the event."""
    async with Log(config) as log:
        letters = [e for e in await dead_letters(log) if e.event is not None]
    chosen = letters if replay_all else choose_letters(letters, offsets, partition)
    if not chosen:
        print("nothing to replay: payment.dlq is empty", file=out)
        return 0
    projected = [e for e in chosen if (e.event or {}).get("consumer", "").startswith(PROJECTOR_PREFIX)]
    if projected:
        await reapply_to_projections(config, projected, out)
    republished = [e for e in chosen if e not in projected]
    if not republished:
        return 0
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all", enable_idempotence=True)
    try:
        await asyncio.wait_for(producer.start(), 15)
    except (KafkaConnectionError, TimeoutError) as exc:
        raise ConsoleError(kafka_hint(config)) from exc
    try:
        for entry in republished:
            d = entry.event or {}
            origin = f"{PAYMENT_DLQ.name}/{entry.partition}/{entry.offset}"
            sent = await producer.send_and_wait(
                d["source_topic"], d["value"], key=d["key"], headers=[(REPLAY_HEADER, origin.encode())]
            )
            print(
                f"replayed [{entry.partition}]@{entry.offset} ({d['error_type']}) -> "
                f"{sent.topic}[{sent.partition}]@{sent.offset} key={key_text(d['key'])}",
                file=out,
            )
    finally:
        await producer.stop()
    return 0


async def reapply_to_projections(config: Config, letters: list[Entry], out: TextIO) -> None:
    from services.projector import PROJECTIONS

    by_name = {p.name: p for p in PROJECTIONS}
    codec = make_codec(config.kafka.schema_registry_url or None)
    conn = await connect_postgres(config)
    try:
        for entry in letters:
            d = entry.event or {}
            name = d["consumer"][len(PROJECTOR_PREFIX) :]
            where = f"[{entry.partition}]@{entry.offset}"
            try:
                event = codec.decode(d["value"])
                applied = name in by_name and await by_name[name].reapply(conn, event)
            except (EventDecodeError, asyncpg.PostgresError, UnicodeError, ValueError, KeyError) as exc:
                print(f"{where}: still refused by projection {name}: {type(exc).__name__}: {exc}", file=out)
                continue
            verdict = "re-applied to" if applied else "nothing to apply in"
            print(f"{where} ({d['error_type']}): {verdict} projection {name}", file=out)
    finally:
        await conn.close()


# --- rebuild ------------------------------------------------------------------------------


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class TableDiff:
    table: str
    live_count: int
    rebuilt_count: int
    lines: list[str]


def diff_rows(
    table: str, pk: Sequence[str], only_live: Sequence[dict[str, Any]], only_rebuilt: Sequence[dict[str, Any]]
) -> list[str]:
    """Rows that are not in both tables, matched on the primary key."""

    def key_of(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[c] for c in pk)

    def name(row: dict[str, Any]) -> str:
        return f"{table} " + ", ".join(f"{c}={row[c]}" for c in pk)

    live = {key_of(r): r for r in only_live}
    rebuilt = {key_of(r): r for r in only_rebuilt}
    lines = []
    for k in sorted(set(live) | set(rebuilt), key=str):
        if k in live and k in rebuilt:
            changed = [
                f"{c}: live={live[k][c]!r} rebuilt={rebuilt[k][c]!r}" for c in live[k] if live[k][c] != rebuilt[k][c]
            ]
            lines.append(f"{name(live[k])} differs: " + "; ".join(changed))
        elif k in live:
            lines.append(f"{name(live[k])} is in the live view but not in the log's rebuild")
        else:
            lines.append(f"{name(rebuilt[k])} is in the rebuild but missing from the live view")
    return lines


async def compare_table(conn: asyncpg.Connection, schema: str, table: str) -> TableDiff:
    columns = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 "
        "AND coalesce(column_default, '') NOT LIKE 'nextval(%' AND is_identity = 'NO' ORDER BY ordinal_position",
        table,
    )
    pk = [
        r["attname"]
        for r in await conn.fetch(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary",
            f"public.{quote(table)}",
        )
    ]
    cols = ", ".join(quote(r["column_name"]) for r in columns)
    live, rebuilt = f"public.{quote(table)}", f"{quote(schema)}.{quote(table)}"
    only_live = [
        dict(r) for r in await conn.fetch(f"SELECT {cols} FROM {live} EXCEPT ALL SELECT {cols} FROM {rebuilt}")
    ]
    only_rebuilt = [
        dict(r) for r in await conn.fetch(f"SELECT {cols} FROM {rebuilt} EXCEPT ALL SELECT {cols} FROM {live}")
    ]
    return TableDiff(
        table,
        await conn.fetchval(f"SELECT count(*) FROM {live}"),
        await conn.fetchval(f"SELECT count(*) FROM {rebuilt}"),
        diff_rows(table, pk or [r["column_name"] for r in columns], only_live, only_rebuilt),
    )


async def create_rebuild_schema(conn: asyncpg.Connection, schema: str, tables: Iterable[str]) -> None:
    await conn.execute(f"CREATE SCHEMA {quote(schema)}")
    # Its own offsets table too: the rebuild must never move the live projector's positions.
    for table in ("projection_offsets", *tables):
        if await conn.fetchval("SELECT to_regclass($1)", f"public.{table}") is None:
            raise ConsoleError(f"table public.{table} does not exist: run `make run` (it applies the migrations)")
        target = f"{quote(schema)}.{quote(table)}"
        await conn.execute(f"CREATE TABLE {target} (LIKE public.{quote(table)} INCLUDING ALL)")
        # LIKE copies nextval() defaults that point at the LIVE sequence; give the copy its own.
        serials = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 "
            "AND column_default LIKE 'nextval(%'",
            schema,
            table,
        )
        for row in serials:
            seq = f"{quote(schema)}.{quote(table + '_' + row['column_name'] + '_seq')}"
            column = quote(row["column_name"])
            await conn.execute(f"CREATE SEQUENCE {seq} OWNED BY {target}.{column}")
            await conn.execute(f"ALTER TABLE {target} ALTER COLUMN {column} SET DEFAULT nextval('{seq}')")


# What the live projector dead-letters rather than stores: the rebuild skips the same events
# (a ProjectionNotReady here means the cause is nowhere on the log).
REFUSED = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    ProjectionNotReady,
    UnicodeError,
    ValueError,
    KeyError,
)


class Rebuilder:
    """Applies a projection's topics into the side schema, remembering how far it got."""

    def __init__(self, log: Log, conn: asyncpg.Connection, schema: str, out: TextIO) -> None:
        self.log, self.conn, self.schema, self.out = log, conn, schema, out
        self.reached: dict[tuple[str, TopicPartition], int] = {}

    async def advance(self, projection: Projection, targets: dict[TopicPartition, int]) -> None:
        # Topic by topic in the projection's order (causes before effects: a payment's
        # creation before its refund), as an applier may need the row an earlier topic made.
        for topic in projection.topics:
            await self._advance(projection, {tp: end for tp, end in targets.items() if tp.topic == topic})

    async def _advance(self, projection: Projection, targets: dict[TopicPartition, int]) -> None:
        starts = {tp: self.reached.get((projection.name, tp), 0) for tp in targets}
        total = sum(max(0, targets[tp] - starts[tp]) for tp in targets)
        if total == 0:
            return
        done, last_report = 0, time.monotonic()
        batches: dict[TopicPartition, list[tuple[int, dict[str, Any] | None]]] = {}
        async for entry in self.log.read(starts, targets):
            tp = TopicPartition(entry.topic, entry.partition)
            batches.setdefault(tp, []).append((entry.offset, entry.event))
            if len(batches[tp]) >= 500:
                done += await self._flush(projection, tp, batches.pop(tp))
            if time.monotonic() - last_report > 2:
                print(f"[rebuild] {projection.name}: {done}/{total} messages", file=self.out, flush=True)
                last_report = time.monotonic()
        for tp, batch in batches.items():
            done += await self._flush(projection, tp, batch)
        for tp in targets:
            self.reached[(projection.name, tp)] = max(targets[tp], starts[tp])
        print(f"[rebuild] {projection.name}: {done} messages applied", file=self.out, flush=True)

    async def _flush(self, projection: Projection, tp: TopicPartition, batch: list[tuple[int, Any]]) -> int:
        try:
            await projection.apply_batch(self.conn, tp.topic, tp.partition, batch, schema=self.schema)
        except REFUSED:
            # An event PostgreSQL refuses: the live projector dead-lettered it, the rebuild skips it too.
            for offset, event in batch:
                try:
                    await projection.apply_batch(self.conn, tp.topic, tp.partition, [(offset, event)], self.schema)
                except REFUSED as exc:
                    print(
                        f"[rebuild] {projection.name}: skipped {tp.topic}[{tp.partition}]@{offset}, refused: "
                        f"{type(exc).__name__}: {exc}",
                        file=self.out,
                        flush=True,
                    )
                    await projection.apply_batch(self.conn, tp.topic, tp.partition, [(offset, None)], self.schema)
        return len(batch)


async def live_next_offsets(conn: asyncpg.Connection, projection: Projection) -> dict[TopicPartition, int]:
    return {TopicPartition(t, p): last + 1 for (t, p), last in (await projection.positions(conn)).items()}


async def connect_postgres(config: Config) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(config.postgres.dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise ConsoleError(
            f"cannot reach PostgreSQL at {config.postgres.host}:{config.postgres.port} "
            f"(ENVIRONMENT={config.environment}): {exc}; start it with `make run`"
        ) from exc


async def rebuild(config: Config, compare_only: bool, keep: bool, wait_s: float, out: TextIO) -> int:
    from services.projector import PROJECTIONS

    missing = [p.name for p in PROJECTIONS if p.name not in VIEW_TABLES]
    if missing:
        raise ConsoleError(f"connectors/projections.VIEW_TABLES does not list the tables of {missing}")
    schema = "rebuild_" + dt.datetime.now(dt.UTC).strftime("%Y%m%d_%H%M%S")
    conn = await connect_postgres(config)
    try:
        async with Log(config) as log:
            await create_rebuild_schema(conn, schema, [t for p in PROJECTIONS for t in VIEW_TABLES[p.name]])
            print(f"[rebuild] into schema {schema}", file=out, flush=True)
            rebuilder = Rebuilder(log, conn, schema, out)
            targets: dict[str, dict[TopicPartition, int]] = {}
            for projection in PROJECTIONS:
                tps = [TopicPartition(t, p) for t in projection.topics for p in log.partitions(t)]
                targets[projection.name] = await log.ends(tps)
                await rebuilder.advance(projection, targets[projection.name])
            differences = await _compare_when_caught_up(conn, rebuilder, PROJECTIONS, targets, schema, wait_s, out)
    finally:
        if keep:
            print(f"[rebuild] kept schema {schema} (drop it with: DROP SCHEMA {schema} CASCADE)", file=out)
        else:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE")
        await conn.close()
    del compare_only  # the rebuild only ever writes its own schema, so comparing is all it can do to the views
    return 1 if differences else 0


async def _compare_when_caught_up(
    conn: asyncpg.Connection,
    rebuilder: Rebuilder,
    projections: Sequence[Projection],
    targets: dict[str, dict[TopicPartition, int]],
    schema: str,
    wait_s: float,
    out: TextIO,
) -> int:
    deadline = time.monotonic() + wait_s
    for projection in projections:
        while True:
            live = await live_next_offsets(conn, projection)
            behind = {tp: end for tp, end in targets[projection.name].items() if end > 0 and live.get(tp, 0) < end}
            if not behind:
                break
            if time.monotonic() > deadline:
                lag = ", ".join(f"{tp.topic}[{tp.partition}] at {live.get(tp, 0)}/{end}" for tp, end in behind.items())
                raise ConsoleError(
                    f"the live projector has not reached the log's end after {wait_s:.0f} s ({lag}): "
                    "is it running? see `make status` / `make logs NAME=projector`"
                )
            await asyncio.sleep(0.2)
    # The live views keep moving: compare inside one snapshot that also holds the live
    # offsets, and first bring the rebuild up to whatever those offsets say.
    for _ in range(10):
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            ahead = {}
            for projection in projections:
                live = await live_next_offsets(conn, projection)
                more = {tp: o for tp, o in live.items() if o > rebuilder.reached.get((projection.name, tp), 0)}
                if more:
                    ahead[projection.name] = more
            if not ahead:
                return await _report(conn, projections, schema, out)
        for projection in projections:
            if projection.name in ahead:
                await rebuilder.advance(projection, ahead[projection.name])
    raise ConsoleError("the live views kept changing faster than the rebuild caught up: run rebuild again when quieter")


async def _report(conn: asyncpg.Connection, projections: Sequence[Projection], schema: str, out: TextIO) -> int:
    differences = 0
    for projection in projections:
        for table in VIEW_TABLES[projection.name]:
            diff = await compare_table(conn, schema, table)
            same = not diff.lines and diff.live_count == diff.rebuilt_count
            verdict_text = "no difference" if same else f"{len(diff.lines)} differing row(s)"
            print(f"{table}: live {diff.live_count} rows, rebuilt {diff.rebuilt_count} rows: {verdict_text}", file=out)
            for line in diff.lines[:50]:
                print(f"    {line}", file=out)
            if len(diff.lines) > 50:
                print(f"    ... and {len(diff.lines) - 50} more", file=out)
            differences += 0 if same else max(1, len(diff.lines))
    print(
        "no difference: the views equal a rebuild from the log"
        if not differences
        else f"{differences} difference(s) between the views and the log",
        file=out,
    )
    return differences


# --- command line -----------------------------------------------------------------------


def since_arg(text: str) -> int:
    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="payments", description="Trace, tail and repair the payment system's log.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("trace", help="every event about a payment or wallet id, in time order")
    t.add_argument("id")
    t.add_argument("--follow", action="store_true", help="keep watching for new events until Ctrl-C")
    t.add_argument("--json", action="store_true", help="one JSON object per line")
    t.add_argument("--since-hours", type=float, help="only events of the last H hours")
    ta = sub.add_parser("tail", help="decoded events of one topic as they arrive")
    ta.add_argument("topic")
    where = ta.add_mutually_exclusive_group()
    where.add_argument("--from-beginning", action="store_true")
    where.add_argument("--offset", type=int, help="start at this offset (on every partition read)")
    where.add_argument("--since", type=since_arg, help="5m, 2h, 1d ago or an ISO-8601 time")
    ta.add_argument("--key", help="only this key (reads only the partition it maps to)")
    ta.add_argument("--json", action="store_true")
    ta.add_argument("--max", type=int, help="stop after N events")
    d = sub.add_parser("dlq", help="dead letters on payment.dlq")
    dsub = d.add_subparsers(dest="dlq_command", required=True)
    dl = dsub.add_parser("list", help="every dead letter with its reason and source")
    dl.add_argument("--json", action="store_true")
    dr = dsub.add_parser("replay", help="produce dead letters' original bytes back to their source topic")
    dr.add_argument("offsets", type=int, nargs="*", help="offsets on payment.dlq, as `dlq list` prints them")
    dr.add_argument("--partition", type=int, help="the payment.dlq partition of those offsets")
    dr.add_argument("--all", action="store_true", help="replay every dead letter")
    r = sub.add_parser("rebuild", help="rebuild the views from the log in a side schema and compare")
    r.add_argument("--compare-only", action="store_true", help="never touch the live views (the only mode)")
    r.add_argument("--keep", action="store_true", help="keep the rebuild schema for inspection")
    r.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the live projector")
    return p


async def run(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    if args.command == "trace":
        return await trace(config, args.id, args.follow, args.json, args.since_hours, out)
    if args.command == "tail":
        start = "beginning" if args.from_beginning else "end"
        return await tail(config, args.topic, start, args.offset, args.since, args.key, args.json, args.max, out)
    if args.command == "dlq" and args.dlq_command == "list":
        return await dlq_list(config, args.json, out)
    if args.command == "dlq":
        if not args.all and not args.offsets:
            raise ConsoleError("name the dead letters to replay (offsets from `payments dlq list`) or pass --all")
        return await dlq_replay(config, args.offsets, args.partition, args.all, out)
    return await rebuild(config, args.compare_only, args.keep, args.wait, out)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = load_config()
        return asyncio.run(run(args, config, sys.stdout))
    except ConfigError as exc:
        print(f"payments: configuration: {exc}", file=sys.stderr)
    except ConsoleError as exc:
        print(f"payments: {exc}", file=sys.stderr)
    except KafkaError as exc:
        print(f"payments: Kafka error {exc!r}: check `make status`", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
