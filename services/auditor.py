"""The money auditor: a second witness that checks the books continuously from the log.

It reads every event topic (no consumer group), feeds `domain.audit.Ledger`, and judges the
payments as they settle. It shares no code path with the workers' decisions. Its state is
checkpointed in PostgreSQL (connectors.audit_store) with the offsets it covers, every
CHECKPOINT_EVERY_S, every CATCH_UP_CHECKPOINT_EVERY messages or CATCH_UP_CHECKPOINT_WALLETS
changed wallets while catching up, and on a clean stop; a start resumes from the last
checkpoint. Memory holds what is open: payments not judged, wallets changed since the last
checkpoint and the `wallets_in_memory` most recently used others; the other wallets' running
figures are read back from PostgreSQL, one query per batch read.

While catching up, time is the log's own (services.auditor_clock): a payment is judged once
every partition has been read `quiet_s` past its last event, and partitions that run ahead are
paused, so the open payments stay few however long the log is.

    python -m services.auditor               # resume from the checkpoint (offset 0 without one)
    python -m services.auditor --from-start  # full re-audit from offset 0 with progress, then
                                             # replace the checkpoint and exit (stop the service first;
                                             # interrupted, a plain start resumes the re-audit)

`/` lists the violations with their coordinates on the log, `/violations` the same as
JSON, `/money-sources` how much money entered the wallets per source, actor and currency,
`/status` how far it has read and its checkpoint, `/ready` 200 once it has read up to the log
end it saw at start, `/metrics` money_invariant_violations_total, the per-invariant gauge
money_invariant_violations_open and money_entered_minor_units per source and currency.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from connectors import topics
from connectors.audit_store import AuditStore
from connectors.avro import EventDecodeError, make_codec
from connectors.config import Config, load_config
from connectors.credentials import AUDITOR
from connectors.event_loop import use_event_loop
from connectors.kafka_security import kafka_access
from connectors.logs import setup_logging
from domain.audit import Ledger
from domain.audit_books import At, Event
from domain.audit_state import (
    ledger_from_dict,
    ledger_to_dict,
    payment_to_dict,
    restore_payments,
    restore_wallets,
    wallet_to_dict,
)
from services.auditor_clock import LogClock
from services.auditor_web import JUDGE_EVERY_S, key, show_progress, web_app

log = logging.getLogger("auditor")

# Commands and raw provider input are not the books; the dead letters are accounted elsewhere.
NOT_AUDITED = {topics.WALLET_MOVEMENT_REQUIRED.name, topics.EXTERNAL_PROVIDER_EVENTS.name, topics.PAYMENT_DLQ.name}
AUDITED = tuple(t.name for t in topics.ALL_TOPICS if t.name not in NOT_AUDITED)
# A checkpoint writes every wallet's running figures (about 1 KB each): often enough that a
# crash re-reads little, rarely enough to cost little; skipped when nothing changed.
CHECKPOINT_EVERY_S = 30.0
# While catching up the reading never pauses for long, so a checkpoint every so many messages
# keeps the wallets and judged payments in memory bounded during a long re-audit.
CATCH_UP_CHECKPOINT_EVERY = 50_000
# ... or sooner when that many wallets changed: with many busy wallets, they are what fills memory.
CATCH_UP_CHECKPOINT_WALLETS = 3_000

VIOLATIONS_TOTAL = Counter("money_invariant_violations_total", "Money invariant violations found", ["invariant"])
VIOLATIONS_OPEN = Gauge("money_invariant_violations_open", "Violations not cleared, per invariant", ["invariant"])
LEDGER = Gauge("money_ledger_minor_units", "Ledger totals per currency (complete wallets)", ["currency", "kind"])
EVENTS_READ = Counter("money_auditor_events_total", "Events the auditor read", ["outcome"])
# Per source and currency only: a payment's compensation acts for its payer, so actors are unbounded.
ENTERED = Gauge(
    "money_entered_minor_units", "Money that entered wallets, per named source and currency", ["source", "currency"]
)
LAG = Gauge("money_auditor_lag_messages", "Messages of the log the auditor has not read yet")
CHECKPOINT_AGE = Gauge("money_auditor_checkpoint_age_seconds", "Seconds since the auditor's last checkpoint")


class Auditor:
    def __init__(self, config: Config, from_start: bool = False) -> None:
        self.config = config
        self.from_start = from_start
        self.ledger = Ledger()
        self.codec = make_codec(config.kafka.schema_registry_url or None)
        self.positions: dict[TopicPartition, int] = {}
        self.starts: dict[TopicPartition, int] = {}  # where this process began reading
        self.target: dict[TopicPartition, int] = {}  # the log end it saw at start
        self.consumer: AIOKafkaConsumer | None = None
        self.store: AuditStore | None = None
        self.epoch = 0
        self.resumed_from: datetime | None = None  # when the checkpoint it started from was written
        self.caught_up = False
        self.stored_payments = False  # whether this epoch has written judged payments to read back
        self.stored_wallets = False  # ... and wallets
        self.clock = LogClock()
        self.read_back = {"wallets": 0, "payments": 0}  # books read back from the store
        self.read_since_checkpoint = 0
        # Held from reading a batch's wallets back to adding its events: a checkpoint must not
        # let go of a wallet in between.
        self.adding = asyncio.Lock()
        self.last_checkpoint: dict[str, Any] | None = None
        self.reported = 0

    # ------------------------------------------------------------ reading

    async def run(self, stop: asyncio.Event) -> None:
        self.store = await AuditStore.open(self.config)
        self.consumer = consumer = AIOKafkaConsumer(
            **kafka_access(self.config, AUDITOR).aiokafka(),
            group_id=None,
            enable_auto_commit=False,
            # It judges after quiet_s of silence: fewer, fuller fetches cost the broker less.
            fetch_min_bytes=256 * 1024,
            fetch_max_wait_ms=250,
            # Catching up, every partition it reads is behind: aiokafka's defaults (1 MiB a
            # partition, 50 MiB a fetch) would hold tens of MiB of records it has not read yet.
            max_partition_fetch_bytes=256 * 1024,
            fetch_max_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        tasks: list[asyncio.Task[None]] = []
        try:
            cluster = await consumer._client.fetch_all_metadata()
            parts = [TopicPartition(t, p) for t in AUDITED for p in sorted(cluster.partitions_for_topic(t) or ())]
            begins = await consumer.beginning_offsets(parts)
            self.target = dict(await consumer.end_offsets(parts))
            self.starts = await self.resume(begins)
            consumer.assign(parts)
            # Explicit offsets: seek_to_beginning() races with the first fetch.
            for tp, offset in self.starts.items():
                consumer.seek(tp, offset)
            self.positions = dict(self.starts)
            log.info(
                "auditing %d partitions of %s, %d message(s) to catch up",
                len(parts),
                ", ".join(AUDITED),
                self.catching_up(),
            )
            judging = asyncio.create_task(self.judge_forever(stop))
            checkpoints = asyncio.create_task(self.checkpoint_forever(stop))
            tasks = [judging, checkpoints]
            self.check_caught_up()
            while not stop.is_set():
                try:
                    batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                except KafkaError as exc:  # the broker went away: aiokafka reconnects, we wait
                    log.warning("reading the log failed (%r); retrying", exc)
                    await asyncio.sleep(1)
                    continue
                await self.read(batches)
            judging.cancel()
            # Never cancelled in the middle of a write: a transaction abandoned mid-way would
            # hold its rows' locks against the final checkpoint.
            await checkpoints
            if self.caught_up:
                await self.checkpoint()  # a clean stop: the next start reads nothing twice
        finally:
            for task in tasks:
                task.cancel()
            await consumer.stop()
            await self.store.close()

    async def resume(self, begins: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Where to start each partition: the checkpoint's offsets with its state, else the beginning."""
        assert self.store is not None
        found = None if self.from_start else await self.store.checkpoint()
        if found is not None and any(found.offsets.get(key(tp), 0) > end for tp, end in self.target.items()):
            log.warning("the checkpoint is ahead of the log (a Kafka recreated under it): auditing from offset 0")
            found = None
        if found is None:
            self.epoch = await self.store.epoch() + 1  # a new epoch: the judged payments stored before are not ours
            log.info(
                "no checkpoint%s: auditing from offset 0 (epoch %d)", " used" if self.from_start else "", self.epoch
            )
            return dict(begins)
        self.epoch, self.resumed_from = found.epoch, found.written_at
        self.stored_payments = self.stored_wallets = True
        age = (datetime.now(UTC) - found.written_at).total_seconds()
        self.last_checkpoint = {
            "written_at": found.written_at.isoformat(),
            "at": time.monotonic() - age,
            "offsets": found.offsets,
            "ledger": None,  # not this process's: its first periodic checkpoint writes
        }
        self.clock.resume_at(float(found.state.get("clock", 0.0)))
        self.ledger = ledger_from_dict(found.state, self.clock.now())
        self.reported = self.ledger.found  # counted and logged by the process that found them
        starts = {}
        for tp, begin in begins.items():
            offset = found.offsets.get(key(tp), begin)
            if offset < begin:
                log.warning("%s: the log no longer holds offsets %d..%d since the checkpoint", key(tp), offset, begin)
            starts[tp] = max(offset, begin)
        log.info("resuming from the checkpoint of %s (epoch %d)", found.written_at.isoformat(), self.epoch)
        return starts

    async def read(self, batches: dict[TopicPartition, list[Any]]) -> None:
        # Each event decoded once; while catching up, stamped with its own time on the log.
        decoded: list[tuple[TopicPartition, int, float, Event]] = []
        for tp, messages in batches.items():
            for message in messages:
                try:
                    decoded.append((tp, message.offset, message.timestamp / 1000, self.codec.decode(message.value)))
                except EventDecodeError:
                    EVENTS_READ.labels("undecodable").inc()
        async with self.adding:
            await self.bring_back([event for _, _, _, event in decoded])
            now = self.clock.now()
            for tp, offset, stamp, event in decoded:
                self.ledger.add(event, At(tp.topic, tp.partition, offset), now if self.caught_up else stamp)
        EVENTS_READ.labels("read").inc(len(decoded))
        for tp, messages in batches.items():
            if messages:
                self.positions[tp] = messages[-1].offset + 1
                self.clock.read(tp, messages[-1].timestamp / 1000)
        self.read_since_checkpoint += len(decoded)
        self.check_caught_up()
        if not self.caught_up:
            self.pace()
        self.report_new()
        if not self.caught_up and (
            self.read_since_checkpoint >= CATCH_UP_CHECKPOINT_EVERY
            or len(self.ledger.wallets.dirty) >= CATCH_UP_CHECKPOINT_WALLETS
        ):
            await self.checkpoint_now()

    async def bring_back(self, events: list[Event]) -> None:
        """The wallets, then the judged payments, that these events name and memory does not
        hold, read back from the store (one query each for the whole batch); the wallets first,
        as a revert names its payment only through its wallet's movements."""
        ledger, now = self.ledger, self.clock.now()
        wallets = ledger.wallets.missing(w for e in events if (w := ledger.wallets_wanted(e)) is not None)
        if wallets:
            stored = await self.from_store("wallets", wallets) if self.stored_wallets else {}
            restore_wallets(ledger, wallets, stored, now)
            self.read_back["wallets"] += len(stored)
        wanted = sorted({w for event in events if (w := ledger.wanted(event)) is not None})
        if wanted and self.stored_payments:
            judged = await self.from_store("judged_payments", wanted)
            restore_payments(ledger, judged, now)
            self.read_back["payments"] += len(judged)

    async def from_store(self, what: str, ids: list[str]) -> dict[str, Any]:
        """Until PostgreSQL answers: judging news without its wallet's or payment's book would be
        wrong, so the auditor stalls (its lag grows, MoneyAuditorBehind) rather than guess."""
        assert self.store is not None
        read = getattr(self.store, what)
        while True:
            try:
                found: dict[str, Any] = await read(self.epoch, ids)
                return found
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("reading %s back failed (%r); retrying", what.replace("_", " "), exc)
                await asyncio.sleep(1)

    def pace(self) -> None:
        """Pause the partitions read further ahead on the log than the others, resume the rest."""
        assert self.consumer is not None
        lagging = [tp for tp, end in self.target.items() if self.positions.get(tp, 0) < end]
        ahead = self.clock.ahead(lagging)
        self.consumer.pause(*ahead)
        self.consumer.resume(*(tp for tp in self.target if tp not in ahead))

    def catching_up(self) -> int:
        """Messages between where it stands and the log end it saw at start."""
        return sum(max(0, end - self.positions.get(tp, 0)) for tp, end in self.target.items())

    def check_caught_up(self) -> None:
        if not self.caught_up and self.consumer is not None and self.catching_up() == 0:
            self.caught_up = True
            self.clock.caught_up()
            self.consumer.resume(*self.target)
            log.info("caught up with the log end seen at start: judging from now on")

    # ------------------------------------------------------------ judging and checkpoints

    async def judge_forever(self, stop: asyncio.Event) -> None:
        audit = self.config.auditor
        while not stop.is_set():
            # While catching up, only payments, by the log's time: every partition has been read
            # up to then. Gaps and currency sums wait until every topic has been read.
            if self.caught_up:
                self.ledger.judge(self.clock.now(), audit.quiet_s, audit.grace_s)
            else:
                self.ledger.judge_payments(self.clock.now(), audit.quiet_s, audit.grace_s)
            self.publish()
            await asyncio.sleep(JUDGE_EVERY_S)

    async def checkpoint_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), CHECKPOINT_EVERY_S)
                return  # stopping: run() writes the last one
            except TimeoutError:
                pass
            if self.caught_up and self.changed_since_checkpoint():
                await self.checkpoint_now()

    def changed_since_checkpoint(self) -> bool:
        if self.last_checkpoint is None:
            return True
        ledger = self.ledger
        now = (ledger.found, len(ledger.pending), len(ledger.evicted), len(ledger.payments), len(ledger.wallets.dirty))
        moved = any(self.last_checkpoint["offsets"].get(key(tp)) != p for tp, p in self.positions.items())
        return moved or now != self.last_checkpoint["ledger"]

    async def checkpoint_now(self) -> None:
        try:
            await self.checkpoint()
        except Exception as exc:  # noqa: BLE001 - PostgreSQL away, a timeout: the next one retries
            log.warning("checkpoint failed (%r); the next one retries", exc)

    async def checkpoint(self) -> None:
        """The state, the offsets it covers, the payments judged and the wallets changed since the
        last one, taken together (no await in between) and written in one transaction; then the
        wallets beyond those memory keeps leave it."""
        assert self.store is not None
        started = time.monotonic()
        ledger = self.ledger
        taken = ledger.wallets.take_dirty()
        wallets = {wallet_id: wallet_to_dict(book) for wallet_id, book in taken.items()}
        state, offsets = ledger_to_dict(ledger), {key(tp): p for tp, p in self.positions.items()}
        state["clock"] = self.clock.now()
        judged = dict(ledger.evicted)
        try:
            size = await self.store.write(
                self.epoch, offsets, state, {p: payment_to_dict(b) for p, b in judged.items()}, wallets
            )
        except BaseException:
            ledger.wallets.untake(taken)
            raise
        ledger.written(judged)
        async with self.adding:
            forgotten = ledger.wallets.forget(self.config.auditor.wallets_in_memory)
        self.read_since_checkpoint = 0
        self.stored_payments = self.stored_payments or bool(judged)
        self.stored_wallets = self.stored_wallets or bool(wallets)
        self.last_checkpoint = {
            "written_at": datetime.now(UTC).isoformat(),
            "at": time.monotonic(),
            "offsets": offsets,
            "ledger": (
                self.ledger.found,
                len(self.ledger.pending),
                len(self.ledger.evicted),
                len(self.ledger.payments),
                len(self.ledger.wallets.dirty),
            ),
            "state_bytes": size,
            "judged_payments_written": len(judged),
            "wallets_written": len(wallets),
            "write_s": round(time.monotonic() - started, 3),
        }
        log.info(
            "checkpoint: %d bytes of state, %d judged payment(s), %d wallet(s) written, %d let go of, %.2fs",
            size,
            len(judged),
            len(wallets),
            forgotten,
            time.monotonic() - started,
        )

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
        if self.last_checkpoint is not None:
            CHECKPOINT_AGE.set(time.monotonic() - self.last_checkpoint["at"])

    def report_new(self) -> None:
        """The counter and the log line of every violation found since the last call."""
        for violation in self.ledger.violations:
            if violation.number <= self.reported:
                continue
            VIOLATIONS_TOTAL.labels(violation.invariant).inc()
            log.error(
                "money invariant %s violated at %s@%d/%d: %s",
                violation.invariant,
                violation.at.topic,
                violation.at.partition,
                violation.at.offset,
                violation.message,
            )
        self.reported = self.ledger.found

    def lag(self) -> dict[str, int]:
        if self.consumer is None:
            return {}
        found = {}
        for tp, position in self.positions.items():
            highwater = self.consumer.highwater(tp)
            found[key(tp)] = max(0, (highwater or position) - position)
        return found


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The money auditor")
    parser.add_argument("--from-start", action="store_true", help="re-audit from offset 0, then replace the checkpoint")
    args = parser.parse_args(argv)
    config = load_config()
    setup_logging(config, "auditor")
    auditor = Auditor(config, from_start=args.from_start)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(web_app(auditor))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", config.auditor.port).start()
    except OSError:
        await runner.cleanup()
        sys.exit(f"port {config.auditor.port} is taken: is the auditor running? stop it first")
    progress = asyncio.create_task(show_progress(auditor, stop)) if args.from_start else None
    try:
        await auditor.run(stop)
    finally:
        if progress is not None:
            progress.cancel()
        await runner.cleanup()


if __name__ == "__main__":
    use_event_loop(load_config())
    asyncio.run(main())
