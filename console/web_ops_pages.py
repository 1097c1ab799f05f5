"""The web console's operations pages: dead letters, the auditor's violations, health."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from console.entries import Entry, details
from console.web_pages import BASE, Safe, age, h, hidden_csrf, iso, layout, link, table
from services.system_health import FAIL, OK, WARN, Health

STATE_CLASS = {OK: "ok", WARN: "muted", FAIL: "bad"}


def event_link(topic: str, partition: int, offset: int) -> Safe:
    return link(f"{BASE}/events/{topic}/{partition}/{offset}", f"{topic}[{partition}]@{offset}")


def dlq_page(subject: str, csrf: str, letters: Sequence[Entry], now_ms: int, outcome: str = "") -> str:
    def replay(entry: Entry) -> Safe:
        return Safe(
            f'<form class="inline" method="post" action="{BASE}/dlq/replay">{hidden_csrf(csrf)}'
            f'<input type="hidden" name="partition" value="{entry.partition}">'
            f'<input type="hidden" name="offset" value="{entry.offset}"><button type="submit">Replay</button></form>'
        )

    rows = [
        [
            iso(e.timestamp),
            age(e.timestamp, now_ms),
            event_link(e.topic, e.partition, e.offset),
            details(e).get("consumer", ""),
            details(e).get("reason", e.error),
            details(e).get("source", ""),
            details(e).get("original", ""),
            replay(e) if e.event is not None else "",
        ]
        for e in letters
    ]
    shown = f"<pre id=outcome>{h(outcome)}</pre>" if outcome else ""
    body = (
        f"{shown}<p>{len(letters)} dead letter(s). A worker's letter goes back on its source topic, a projector's "
        "is applied to its projection again (as <code>payments dlq replay</code>).</p>"
        + table(["time", "age", "letter", "consumer", "reason", "source", "original", ""], rows, "no dead letter")
    )
    return layout("Dead letters", Safe(body), subject, csrf)


def violations_page(
    subject: str, csrf: str, violations: Sequence[Mapping[str, Any]], times: Mapping[tuple[str, int, int], int],
    now_ms: int, problem: str = "",
) -> str:  # fmt: skip
    def when(at: Mapping[str, Any]) -> tuple[str, str]:
        millis = times.get((at["topic"], at["partition"], at["offset"]))
        return ("unknown", "") if millis is None else (iso(millis), age(millis, now_ms))

    rows = [
        [
            *when(v["at"]),
            v["invariant"],
            v["subject"],
            event_link(v["at"]["topic"], v["at"]["partition"], v["at"]["offset"]),
            "cleared" if v.get("cleared") else "open",
            v["message"],
        ]
        for v in reversed(violations)
    ]
    shown = f'<p class="bad">{h(problem)}</p>' if problem else ""
    body = shown + table(["time", "age", "invariant", "subject", "event", "state", "what"], rows, "no violation")
    return layout("Money auditor: violations", Safe(body), subject, csrf)


def health_page(subject: str, csrf: str, health: Health) -> str:
    """The system's health as `payments health` and the gateway's /api/v1/system/health give it."""
    rows = [
        [check.name, Safe(f'<span class="{STATE_CLASS[check.state]}">{h(check.state)}</span>'), check.detail]
        for check in health.checks
    ]
    verdict = "healthy" if health.healthy else "UNHEALTHY: " + ", ".join(health.failing())
    summary = Safe(f'<p id=verdict class="{"ok" if health.healthy else "bad"}">{h(verdict)}, checked at '
                   f"{h(iso(int(health.checked_at * 1000)))}</p>")  # fmt: skip
    return layout("Health", Safe(summary + table(["check", "state", "detail"], rows)), subject, csrf)
