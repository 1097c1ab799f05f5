"""payments trace ID: every event about a payment or wallet id across every topic, in time
order with the time between hops; --follow keeps watching. `--request-id RID` finds the
payments a request created or asked to refund (the `request_id` header the API puts on their
events) and traces each."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from aiokafka import TopicPartition

from connectors.config import Config
from connectors.topics import ALL_TOPICS, PAYMENT_CREATED, PAYMENT_DLQ, PAYMENT_REFUND_REQUESTED
from connectors.tracing import REQUEST_ID_EVENT_HEADER, header_value
from console.entries import (
    WALLET_TOPICS,
    Entry,
    Printer,
    is_about,
    is_payment,
    movements_of,
    summary_json,
    summary_lines,
    timeline,
    wallets_named,
)
from console.sources import ConsoleError, Log, stop_on_signals

# Where a caller's request becomes events about a payment: its creation and its refunds.
REQUEST_TOPICS = (PAYMENT_CREATED.name, PAYMENT_REFUND_REQUESTED.name)


async def payments_of_request(config: Config, request_id: str, since_hours: float | None) -> list[str]:
    """The payment ids whose creation or refund request carried this request id, oldest first.
    It reads those two topics whole (or since --since-hours), comparing headers before decoding."""
    since_ms = None if since_hours is None else int(time.time() * 1000 - since_hours * 3_600_000)
    found: list[str] = []
    async with Log(config) as log:
        tps = [TopicPartition(topic, p) for topic in REQUEST_TOPICS for p in log.partitions(topic)]
        async for record in log.reader.read(await log.offsets_at(tps, since_ms), await log.ends(tps)):
            if header_value(record.headers, REQUEST_ID_EVENT_HEADER) == request_id and record.key is not None:
                payment_id = record.key.decode(errors="replace")
                if payment_id not in found:
                    found.append(payment_id)
    return found


async def trace_request(
    config: Config, request_id: str, follow: bool, as_json: bool, since_hours: float | None, out: TextIO
) -> int:
    payment_ids = await payments_of_request(config, request_id, since_hours)
    if not payment_ids:
        raise ConsoleError(f"no payment created or refunded by request {request_id} on {', '.join(REQUEST_TOPICS)}")
    if not as_json:
        print(f"request {request_id}: payment {', '.join(payment_ids)}", file=out)
    for payment_id in payment_ids:
        await trace(config, payment_id, follow and len(payment_ids) == 1, as_json, since_hours, out)
    return 0


async def collect(
    log: Log, ident: str, since_ms: int | None
) -> tuple[list[Entry], dict[TopicPartition, int], set[str], set[str]]:
    """The timeline of `ident` (the web console shows it too), the ends read up to, and the
    wallets and movements it names."""
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
    return timeline(e for e in found if is_about(e, ident, wallets, movements)), ends, wallets, movements


async def trace(config: Config, ident: str, follow: bool, as_json: bool, since_hours: float | None, out: TextIO) -> int:
    since_ms = None if since_hours is None else int(time.time() * 1000 - since_hours * 3_600_000)
    async with Log(config) as log:
        entries, ends, wallets, movements = await collect(log, ident, since_ms)
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
    log.restart(ends)
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
