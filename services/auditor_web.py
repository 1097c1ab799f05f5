"""The money auditor's pages: violations, money sources, status, readiness (services.auditor)."""

from __future__ import annotations

import html
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from connectors.metrics import metrics_handler
from domain.audit_books import INVARIANTS, Violation
from services.http import health, readiness

if TYPE_CHECKING:
    from services.auditor import Auditor


def violation_json(violation: Violation) -> dict[str, Any]:
    return {**asdict(violation), "at": asdict(violation.at)}


def web_app(auditor: Auditor) -> web.Application:
    async def violations(_: web.Request) -> web.Response:
        return web.json_response([violation_json(v) for v in auditor.ledger.violations])

    async def money_sources(_: web.Request) -> web.Response:
        return web.json_response(auditor.ledger.sources.figures())

    async def status(_: web.Request) -> web.Response:
        return web.json_response(auditor.status())

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
    state = auditor.status()
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
