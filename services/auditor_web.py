"""The money auditor's pages (violations, money sources, status, readiness) and the progress a
full re-audit prints (services.auditor)."""

from __future__ import annotations

import asyncio
import html
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiokafka import TopicPartition

from connectors.metrics import metrics_handler
from domain.audit_books import INVARIANTS, Violation
from services.http import health, readiness

if TYPE_CHECKING:
    from services.auditor import Auditor

PROGRESS_EVERY_S = 5.0
JUDGE_EVERY_S = 0.5  # how often the auditor judges (services.auditor)


def key(tp: TopicPartition) -> str:
    return f"{tp.topic}/{tp.partition}"


def violation_json(violation: Violation) -> dict[str, Any]:
    return {**asdict(violation), "at": asdict(violation.at)}


def web_app(auditor: Auditor) -> web.Application:
    async def violations(_: web.Request) -> web.Response:
        return web.json_response([violation_json(v) for v in auditor.ledger.violations])

    async def money_sources(_: web.Request) -> web.Response:
        return web.json_response(auditor.ledger.sources.figures())

    async def status(_: web.Request) -> web.Response:
        return web.json_response(status_of(auditor))

    async def reading(_: web.Request) -> dict[str, str]:
        # Ready once it has read up to the log end it saw when it started: before that its
        # figures are an old checkpoint's, or a partial read of the log.
        if auditor.caught_up:
            return {}
        if auditor.consumer is None:
            return {"log": "not reading the log yet (starting)"}
        return {"log": f"catching up: {auditor.catching_up()} message(s) to the log end it saw at start"}

    ready = readiness(reading)

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=render_page(auditor), content_type="text/html")

    app = web.Application()
    app.add_routes(
        [
            web.get("/", page),
            web.get("/violations", violations),
            web.get("/money-sources", money_sources),
            web.get("/status", status),
            web.get("/metrics", metrics_handler),
            web.get("/health", health),
            web.get("/ready", ready),
        ]
    )
    return app


def render_page(auditor: Auditor) -> str:
    state = status_of(auditor)
    rows = "".join(
        f"<tr class={'cleared' if v.cleared else 'open'}><td>{html.escape(v.invariant)}</td>"
        f"<td>{html.escape(v.subject)}</td><td>{html.escape(v.at.topic)}</td><td>{v.at.partition}</td>"
        f"<td>{v.at.offset}</td><td>{'cleared' if v.cleared else 'open'}</td><td>{html.escape(v.message)}</td></tr>"
        for v in reversed(auditor.ledger.violations)
    )
    counts = ", ".join(f"{name}: {state['open'][name]}" for name in INVARIANTS)
    entered = "".join(
        f"<tr><td>{html.escape(str(row['source']))}</td><td>{html.escape(str(row['actor']))}</td>"
        f"<td>{html.escape(str(row['currency']))}</td><td>{row['amount']}</td><td>{row['incomes']}</td></tr>"
        for row in auditor.ledger.sources.figures()
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>money auditor</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}.cleared{color:#888}</style>"
        f"</head><body><h1>Money auditor</h1><p>open violations: {counts}; lag {state['lag']} messages; "
        f"{state['unjudged_payments']} payment(s) waiting to be judged</p>"
        "<table><tr><th>invariant</th><th>subject</th><th>topic</th><th>partition</th><th>offset</th>"
        f"<th>state</th><th>what</th></tr>{rows or '<tr><td colspan=7>no violation</td></tr>'}</table>"
        "<h2>Money entered, per source and actor</h2><table><tr><th>source</th><th>actor</th><th>currency</th>"
        f"<th>minor units</th><th>incomes</th></tr>{entered or '<tr><td colspan=5>none yet</td></tr>'}</table>"
        "</body></html>"
    )


def status_of(auditor: Auditor) -> dict[str, Any]:
    checkpoint = None
    if auditor.last_checkpoint is not None:
        written = auditor.last_checkpoint
        behind = sum(p - written["offsets"].get(key(tp), 0) for tp, p in auditor.positions.items())
        checkpoint = {
            **{k: v for k, v in written.items() if k not in ("at", "offsets", "ledger")},
            "age_s": round(time.monotonic() - written["at"], 1),
            "messages_behind": behind,  # read since: a crash now reads them again
        }
    return {
        "positions": {key(tp): p for tp, p in sorted(auditor.positions.items())},
        "lag": sum(auditor.lag().values()),
        "caught_up": auditor.caught_up,
        "catching_up": auditor.catching_up(),
        "started_from": {
            "checkpoint_written_at": None if auditor.resumed_from is None else auditor.resumed_from.isoformat(),
            "epoch": auditor.epoch,
            "offsets": {key(tp): p for tp, p in sorted(auditor.starts.items())},
            "messages_skipped": sum(auditor.starts.values()),
        },
        "checkpoint": checkpoint,
        "in_memory": {
            "payments": len(auditor.ledger.payments),
            "judged_not_written": len(auditor.ledger.evicted),
            "wallets": len(auditor.ledger.wallets),
            "wallets_changed": len(auditor.ledger.wallets.dirty),
            "violations": len(auditor.ledger.violations),
        },
        "read_back": auditor.read_back,
        "unchecked_old_versions": auditor.ledger.unchecked,
        "unjudged_payments": auditor.ledger.unjudged(),
        "open": auditor.ledger.open_counts(),
        "violations_total": auditor.ledger.found,
    }


async def show_progress(auditor: Auditor, stop: asyncio.Event) -> None:
    """For --from-start: how much it has read, at what pace, and when it should be done; then it
    waits for the payments read last to be quiet, checkpoints and stops."""
    started, total = time.monotonic(), None
    while not auditor.caught_up and not stop.is_set():
        await asyncio.sleep(PROGRESS_EVERY_S)
        left = auditor.catching_up()
        total = total or sum(auditor.target.values()) - sum(auditor.starts.values())
        done, elapsed = (total or 0) - left, time.monotonic() - started
        rate = done / elapsed if elapsed else 0.0
        eta = f"about {left / rate:.0f}s left" if rate else "estimating"
        print(
            f"[audit] {done:,}/{total:,} messages ({100 * done / max(total, 1):.0f}%), {rate:,.0f}/s, {eta}", flush=True
        )
    await asyncio.sleep(auditor.config.auditor.quiet_s + 2 * JUDGE_EVERY_S)
    state = status_of(auditor)
    print(
        f"[audit] read the log in {time.monotonic() - started:.0f}s; open violations {state['open']}, "
        f"{state['unjudged_payments']} payment(s) still in flight; writing the checkpoint",
        flush=True,
    )
    stop.set()
