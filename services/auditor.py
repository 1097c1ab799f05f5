"""The money auditor: a second witness that checks the books continuously from the log.

It reads every event topic from the beginning (no consumer group: its state is rebuilt
in memory on every start), feeds `domain.audit.Ledger`, and judges the payments as they
settle. It shares no code path with the workers' decisions.

    python -m services.auditor

`/` lists the violations with their coordinates on the log, `/violations` the same as
JSON, `/money-sources` how much money entered the wallets per source, actor and currency,
`/status` how far it has read, `/metrics` money_invariant_violations_total, the per-invariant
gauge money_invariant_violations_open and money_entered_minor_units per source and currency.
"""

from __future__ import annotations

import asyncio
import html
import logging
import signal
import time
from dataclasses import asdict
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from connectors import topics
from connectors.avro import EventDecodeError, make_codec
from connectors.config import Config, load_config
from connectors.credentials import AUDITOR
from connectors.kafka_security import kafka_access
from connectors.logs import setup_logging
from connectors.metrics import metrics_handler
from domain.audit import Ledger
from domain.audit_books import INVARIANTS, At, Violation
from services.http import health, readiness

log = logging.getLogger("auditor")

# Commands and raw provider input are not the books; the dead letters are accounted elsewhere.
NOT_AUDITED = {topics.WALLET_MOVEMENT_REQUIRED.name, topics.EXTERNAL_PROVIDER_EVENTS.name, topics.PAYMENT_DLQ.name}
AUDITED = tuple(t.name for t in topics.ALL_TOPICS if t.name not in NOT_AUDITED)
JUDGE_EVERY_S = 0.5

VIOLATIONS_TOTAL = Counter("money_invariant_violations_total", "Money invariant violations found", ["invariant"])
VIOLATIONS_OPEN = Gauge("money_invariant_violations_open", "Violations not cleared, per invariant", ["invariant"])
LEDGER = Gauge("money_ledger_minor_units", "Ledger totals per currency (complete wallets)", ["currency", "kind"])
EVENTS_READ = Counter("money_auditor_events_total", "Events the auditor read", ["outcome"])
# Per source and currency only: a payment's compensation acts for its payer, so actors are unbounded.
ENTERED = Gauge(
    "money_entered_minor_units", "Money that entered wallets, per named source and currency", ["source", "currency"]
)
LAG = Gauge("money_auditor_lag_messages", "Messages of the log the auditor has not read yet")


class Auditor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.ledger = Ledger()
        self.codec = make_codec(config.kafka.schema_registry_url or None)
        self.positions: dict[TopicPartition, int] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.reported = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer = consumer = AIOKafkaConsumer(
            **kafka_access(self.config, AUDITOR).aiokafka(),
            group_id=None,
            enable_auto_commit=False,
            # It judges after quiet_s of silence: fewer, fuller fetches cost the broker less.
            fetch_min_bytes=256 * 1024,
            fetch_max_wait_ms=250,
        )
        await consumer.start()
        try:
            cluster = await consumer._client.fetch_all_metadata()
            parts = [TopicPartition(t, p) for t in AUDITED for p in sorted(cluster.partitions_for_topic(t) or ())]
            consumer.assign(parts)
            # Explicit offsets: seek_to_beginning() races with the first fetch.
            for tp, begin in (await consumer.beginning_offsets(parts)).items():
                consumer.seek(tp, begin)
                self.positions[tp] = begin
            log.info("auditing %d partitions of %s", len(parts), ", ".join(AUDITED))
            judging = asyncio.create_task(self.judge_forever(stop))
            while not stop.is_set():
                try:
                    batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                except KafkaError as exc:  # the broker went away: aiokafka reconnects, we wait
                    log.warning("reading the log failed (%r); retrying", exc)
                    await asyncio.sleep(1)
                    continue
                now = time.monotonic()
                for tp, messages in batches.items():
                    for message in messages:
                        self.read(tp, message.offset, message.value, now)
                    self.positions[tp] = messages[-1].offset + 1
                self.report_new()
            judging.cancel()
        finally:
            await consumer.stop()

    def read(self, tp: TopicPartition, offset: int, value: bytes, now: float) -> None:
        try:
            event = self.codec.decode(value)
        except EventDecodeError:
            EVENTS_READ.labels("undecodable").inc()
            return
        self.ledger.add(event, At(tp.topic, tp.partition, offset), now)
        EVENTS_READ.labels("read").inc()

    async def judge_forever(self, stop: asyncio.Event) -> None:
        audit = self.config.auditor
        while not stop.is_set():
            self.ledger.judge(time.monotonic(), audit.quiet_s, audit.grace_s)
            self.publish()
            await asyncio.sleep(JUDGE_EVERY_S)

    def publish(self) -> None:
        """Every metric, after judging: the books' figures cost a pass over the wallets."""
        self.report_new()
        for invariant, count in self.ledger.open_counts().items():
            VIOLATIONS_OPEN.labels(invariant).set(count)
        for currency, figures in self.ledger.currency_totals().items():
            for kind, amount in figures.items():
                LEDGER.labels(currency, kind).set(amount)
        for (source, currency), amount in self.ledger.sources.per_source().items():
            ENTERED.labels(source, currency).set(amount)
        LAG.set(sum(self.lag().values()))

    def report_new(self) -> None:
        """The counter and the log line of every violation found since the last call."""
        for violation in self.ledger.violations[self.reported :]:
            VIOLATIONS_TOTAL.labels(violation.invariant).inc()
            log.error(
                "money invariant %s violated at %s@%d/%d: %s",
                violation.invariant,
                violation.at.topic,
                violation.at.partition,
                violation.at.offset,
                violation.message,
            )
        self.reported = len(self.ledger.violations)

    def lag(self) -> dict[str, int]:
        if self.consumer is None:
            return {}
        found = {}
        for tp, position in self.positions.items():
            highwater = self.consumer.highwater(tp)
            found[f"{tp.topic}/{tp.partition}"] = max(0, (highwater or position) - position)
        return found

    def status(self) -> dict[str, Any]:
        return {
            "positions": {f"{tp.topic}/{tp.partition}": p for tp, p in sorted(self.positions.items())},
            "lag": sum(self.lag().values()),
            "unjudged_payments": self.ledger.unjudged(),
            "open": self.ledger.open_counts(),
            "violations_total": len(self.ledger.violations),
        }


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
        if auditor.consumer is not None and bool(auditor.positions):
            return {}
        return {"log": "not reading the log yet (starting)"}

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


async def main() -> None:
    config = load_config()
    setup_logging(config, "auditor")
    auditor = Auditor(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(web_app(auditor))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", config.auditor.port).start()
    try:
        await auditor.run(stop)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
