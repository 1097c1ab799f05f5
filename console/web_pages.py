"""The web console's pages: functions from data to HTML. Every value goes through `h` (html.escape)
unless it is `Safe` markup built here, so a payment description cannot become markup."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from console.entries import Entry, details, fmt_duration, hops, verdict

BASE = "/console"
STYLE = (
    "body{font-family:sans-serif;margin:0;color:#222}nav{background:#234;padding:8px 16px}"
    "nav a,nav button{color:#fff;margin-right:16px;text-decoration:none;background:none;border:0;font:inherit;"
    "cursor:pointer}main{padding:8px 16px}table{border-collapse:collapse;margin:8px 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top;font-size:14px}"
    "th{background:#eef}.bad{color:#a00}.ok{color:#070}.muted{color:#888}form.inline{display:inline}"
    "code{font-size:13px}"
)


class Safe(str):
    """Markup built by this module from escaped parts."""


def h(value: object) -> str:
    return value if isinstance(value, Safe) else html.escape("" if value is None else str(value), quote=True)


def iso(millis: int) -> str:
    """ISO 8601 in UTC, to the millisecond."""
    return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def when(text: str | None) -> str:
    """A view's ISO 8601 timestamp written as `iso` writes the log's, so the two read alike."""
    if not text:
        return ""
    return iso(int(dt.datetime.fromisoformat(text).timestamp() * 1000))


def age(millis: int, now_ms: int) -> str:
    return fmt_duration(max(0, now_ms - millis)) + " ago"


def link(href: str, text: object) -> Safe:
    return Safe(f'<a href="{h(href)}">{h(text)}</a>')


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], empty: str = "none") -> Safe:
    head = "".join(f"<th>{h(name)}</th>" for name in headers)
    body = "".join("<tr>" + "".join(f"<td>{h(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return Safe(f"<table><tr>{head}</tr>{body or f'<tr><td colspan={len(headers)}>{h(empty)}</td></tr>'}</table>")


def fields(values: Mapping[str, object]) -> Safe:
    return table(["field", "value"], values.items())


def hidden_csrf(csrf: str) -> Safe:
    return Safe(f'<input type="hidden" name="csrf" value="{h(csrf)}">')


def layout(title: str, body: str, subject: str | None = None, csrf: str = "") -> str:
    nav = ""
    if subject is not None:
        nav = (
            f"<nav>{link(BASE + '/', 'Payments')}{link(BASE + '/dlq', 'Dead letters')}"
            f"{link(BASE + '/violations', 'Violations')}{link(BASE + '/health', 'Health')}"
            f'<form class="inline" method="post" action="{BASE}/logout">{hidden_csrf(csrf)}'
            f'<button type="submit">Log out {h(subject)}</button></form></nav>'
        )
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{h(title)} - payments console</title>"
        f"<style>{STYLE}</style></head><body>{nav}<main><h1>{h(title)}</h1>{h(body)}</main></body></html>"
    )


def login_page(problem: str | None = None) -> str:
    shown = f'<p class="bad" id="problem">{h(problem)}</p>' if problem else ""
    return layout(
        "Log in",
        Safe(
            f"{shown}<p>Paste a bearer token or an API key of an operator or admin "
            "(<code>make token SUBJECT=you ROLES=operator</code>).</p>"
            f'<form method="post" action="{BASE}/login"><textarea name="credential" id="credential" rows=4 cols=80>'
            '</textarea><br><button type="submit" id="login">Log in</button></form>'
        ),
    )


def forbidden_page(subject: str, roles: Iterable[str]) -> str:
    return layout(
        "Not allowed",
        Safe(
            f'<p class="bad" id="forbidden">{h(subject)} has the role(s) {h(", ".join(sorted(roles)))}: '
            "the console is for operators and admins.</p>"
            f"<p>{link(BASE + '/login', 'Log in with another credential')}</p>"
        ),
    )


def search_form(query: Mapping[str, str]) -> Safe:
    def box(name: str, label: str, size: int) -> str:
        return f'{label} <input name="{name}" id="{name}" size={size} value="{h(query.get(name, ""))}"> '

    return Safe(
        f'<form method="get" action="{BASE}/">{box("id", "payment id", 38)}{box("user_id", "user id", 38)}'
        f'{box("status", "status", 12)}<button type="submit" id="search">Search</button></form>'
    )


def search_page(subject: str, csrf: str, query: Mapping[str, str], found: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            link(f"{BASE}/payments/{p['id']}", p["id"]),
            p["user_id"],
            f"{p['amount']} {p['currency']}",
            p["payment_method_type"],
            p["status"],
            p["description"],
            when(p["created_at"]),
        ]
        for p in found
    ]
    heading = f"{len(found)} payment(s), newest first" if query else "The latest payments"
    result = table(["payment", "user", "amount", "method", "status", "description", "created"], rows, "no payment")
    return layout("Payments", Safe(f"{search_form(query)}<p>{h(heading)}</p>{result}"), subject, csrf)


def timeline_table(entries: Sequence[Entry], now_ms: int) -> Safe:
    rows = [
        [
            iso(e.timestamp),
            "" if hop is None else "+" + fmt_duration(hop),
            link(f"{BASE}/events/{e.topic}/{e.partition}/{e.offset}", f"{e.topic}[{e.partition}]@{e.offset}"),
            e.event_type,
            ", ".join(f"{k}={v}" for k, v in details(e).items()),
        ]
        for e, hop in zip(entries, hops(entries), strict=True)
    ]
    since = f"first event {age(entries[0].timestamp, now_ms)}" if entries else ""
    return Safe(f"<p>{h(since)}</p>" + table(["time", "since previous", "where", "event", "details"], rows))


def worker_state(state: Mapping[str, Any] | str) -> Safe:
    """The worker's live state, its epoch-millisecond fields as ISO 8601."""
    if isinstance(state, str):
        return Safe(f'<p class="muted">{h(state)}</p>')
    shown = {k: iso(v) if is_millis_field(k, v) else v for k, v in state.items()}
    return fields(shown)


def is_millis_field(name: str, value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and name.endswith(("_at", "_ms", "deadline"))


def payment_page(
    subject: str, csrf: str, payment: Mapping[str, Any], entries: Sequence[Entry], state: Mapping[str, Any] | str
) -> str:
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    summary = {k: when(v) if k.endswith("_at") else v for k, v in payment.items() if k not in ("operations", "refunds")}
    if payment.get("wallet_id"):
        summary["wallet_id"] = link(f"{BASE}/wallets/{payment['wallet_id']}", payment["wallet_id"])
    operations = table(
        ["operation", "kind", "status", "amount", "source", "provider reference", "deadline", "failure", "created"],
        (
            [o["id"], o["kind"], o["status"], f"{o['amount']} {o['currency']}", o["source"], o["reference"],
             when(o["deadline_at"]), o["failure_code"] or "", when(o["created_at"])]
            for o in payment["operations"]
        ),
    )  # fmt: skip
    refunds = table(
        ["refund", "amount", "status", "reason", "requested", "decided"],
        (
            [
                r["id"],
                f"{r['amount']} {r['currency']}",
                r["status"],
                r["reason"],
                when(r["requested_at"]),
                when(r["decided_at"]),
            ]
            for r in payment["refunds"]
        ),
    )
    terminal, sentence = verdict(entries, now_ms) if entries else (False, "no events found on the log")
    body = (
        f'{fields(summary)}<p id=verdict class="{"ok" if terminal else "bad"}">{h(sentence)}</p>'
        f"<h2>Timeline across topics</h2><div id=timeline>{timeline_table(entries, now_ms)}</div>"
        f"<h2>Operations</h2>{operations}<h2>Refunds</h2>{refunds}"
        f"<h2>Live saga state (payment worker)</h2>{worker_state(state)}"
    )
    return layout(f"Payment {payment['id']}", Safe(body), subject, csrf)


def wallet_page(
    subject: str,
    csrf: str,
    wallet: Mapping[str, Any],
    movements: Sequence[Mapping[str, Any]],
    state: Mapping[str, Any] | str,
) -> str:
    rows = [
        [
            when(m.get("created_at")),
            m.get("type"),
            f"{m.get('amount')} {m.get('currency')}",
            m.get("balance_after", ""),
            link(f"{BASE}/payments/{m['payment_id']}", m["payment_id"]) if m.get("payment_id") else "",
            m.get("reference"),
            m.get("description"),
        ]
        for m in movements
    ]
    wallet = {**wallet, "last_updated": when(wallet.get("last_updated"))}
    body = f"{fields(wallet)}<h2>Movements, newest first</h2>" + table(
        ["time", "type", "amount", "balance after", "payment", "reference", "description"], rows
    )
    body += f"<h2>Live state (wallet worker)</h2>{worker_state(state)}"
    return layout(f"Wallet {wallet['id']}", Safe(body), subject, csrf)


def event_page(subject: str, csrf: str, entry: Entry, now_ms: int) -> str:
    event = entry.event or {}
    envelope = event.get("envelope", {})
    summary: dict[str, object] = {
        "where": f"{entry.topic}[{entry.partition}]@{entry.offset}",
        "time": iso(entry.timestamp),
        "age": age(entry.timestamp, now_ms),
        "event": entry.event_type,
        "key": entry.key,
        "correlation id": envelope.get("correlation_id"),
        "trace id": entry.trace_id,
        **details(entry),
    }
    for name in ("payment_id", "wallet_id"):
        if event.get(name):
            summary[name] = link(f"{BASE}/{name.split('_')[0]}s/{event[name]}", event[name])
    return layout(f"Event {summary['where']}", Safe(fields(summary)), subject, csrf)
