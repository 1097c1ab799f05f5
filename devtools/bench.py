"""Benchmark: wallet payments through the public REST API, beside a chain of bare relays.

    python -m devtools.bench [--mode fixed --rate 50 --duration 20 | --mode max] [--environment bench]

Brings the environment up (or reuses it), creates hot and cold wallets, drives
payments open-loop (the schedule does not wait for responses, so a slow system
cannot slow the load down and hide its own latency), and times each payment from
its scheduled send to the arrival of its terminal event on the log. Then it drives
a chain of minimal relay processes (consume, produce, nothing else) with as many
hops as a wallet payment crosses, on the same broker, at the same rates. Writes
results/bench-<timestamp>.json and a PNG next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import random
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka.admin import NewTopic

from connectors.auth import issue_token
from connectors.avro import EventDecodeError, make_codec
from connectors.config import Config, load_config
from connectors.kafka_admin import admin_client
from connectors.topics import PAYMENT_FAILED, PAYMENT_SUCCESS
from devtools import devctl, localinfra

RESULTS = localinfra.ROOT / "results"
# payment.created -> wallet.movement_required -> wallet.movement_updates
# -> payment.payment_operation.completed -> payment.success: four consume-produce steps.
RELAY_HOPS = 4
HOT_BALANCE = 10**11
COLD_BALANCE = 10**9
FAIL_AMOUNT = 10**13  # above any balance: insufficient_funds
MAX_LADDER = (25, 50, 100, 200, 400, 800, 1600, 3200, 6400)
STAMP = struct.Struct("!dq")  # scheduled send time, sequence number


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------- processes


def proc_sample(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, RSS bytes) of a process, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return cpu, rss


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def stack_pids(config: Config) -> dict[str, list[int]]:
    supervisor = devctl.Supervisor(config)
    pids = {p.name: [pid] for p in devctl.processes(config) if (pid := supervisor.pid(p.name))}
    kafka = localinfra.read_pid(localinfra.kafka_home(config) / "kafka.pid")
    if kafka:
        pids["kafka"] = [kafka]
    postmaster = localinfra.state_dir(config) / "postgres" / "data" / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError):
        root = int(postmaster.read_text().split()[0])
        pids["postgres"] = [root, *children(root)]  # backends come and go; the sample is at the edges
    return pids


@dataclass
class CpuWindow:
    started: float
    before: dict[str, dict[int, tuple[float, int]]]

    @classmethod
    def open(cls, pids: dict[str, list[int]]) -> CpuWindow:
        return cls(time.monotonic(), snapshot(pids))

    def close(self, pids: dict[str, list[int]]) -> dict[str, dict[str, float]]:
        after, wall = snapshot(pids), time.monotonic() - self.started
        report = {}
        for name, group in after.items():
            # Only processes seen at both edges: a PostgreSQL backend that came or went between them has no delta.
            earlier = self.before.get(name, {})
            used = sum(cpu - earlier[pid][0] for pid, (cpu, _) in group.items() if pid in earlier)
            rss = sum(r for _, r in group.values())
            report[name] = {"cpu_s": round(used, 2), "cpu_pct": round(100 * used / wall, 1), "rss_mb": rss / 2**20}
        return report


def snapshot(pids: dict[str, list[int]]) -> dict[str, dict[int, tuple[float, int]]]:
    result = {}
    for name, group in pids.items():
        samples = {pid: s for pid in group if (s := proc_sample(pid))}
        if samples:
            result[name] = samples
    return result


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine: the share other work takes is visible."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# ---------------------------------------------------------------- measurement


@dataclass
class Step:
    system: str
    rate: float
    duration: float
    sent: int = 0
    completed_in_window: int = 0
    completed: int = 0
    failed: int = 0
    http_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    latency_at: list[float] = field(default_factory=list)  # seconds since the step began
    http_ms: list[float] = field(default_factory=list)
    projection_lag_ms: list[float] = field(default_factory=list)
    records_per_s: float = 0.0
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    machine_busy_pct: float = 0.0

    @property
    def throughput(self) -> float:
        return self.completed_in_window / self.duration

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        result = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("latencies_ms", "latency_at", "http_ms", "projection_lag_ms")
        }
        result.update(
            throughput=round(self.throughput, 1),
            p50_ms=percentile(lat, 0.50),
            p95_ms=percentile(lat, 0.95),
            p99_ms=percentile(lat, 0.99),
            max_ms=max(lat, default=float("nan")),
            http_p50_ms=percentile(self.http_ms, 0.5),
            http_p99_ms=percentile(self.http_ms, 0.99),
            projection_lag_p50_ms=percentile(self.projection_lag_ms, 0.5),
            projection_lag_p99_ms=percentile(self.projection_lag_ms, 0.99),
            projection_lag_max_ms=max(self.projection_lag_ms, default=float("nan")),
        )
        return result

    def sustained(self, slo_p99_ms: float) -> bool:
        return self.throughput >= 0.9 * self.rate and percentile(self.latencies_ms, 0.99) <= slo_p99_ms


async def end_offsets_total(bootstrap: str, prefix: str | None) -> int:
    """Records on every topic (or those starting with prefix): the difference over a step is its traffic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        chosen = [
            t for t in cluster.topics() if (t.startswith(prefix) if prefix else not t.startswith(("__", "bench.")))
        ]
        tps = [TopicPartition(t, p) for t in chosen for p in cluster.partitions_for_topic(t) or ()]
        return sum((await consumer.end_offsets(tps)).values()) if tps else 0
    finally:
        await consumer.stop()


class Tail:
    """Reads topics from their current end and hands every message to a callback with its arrival time."""

    def __init__(self, bootstrap: str, topics: list[str], on_message: Any) -> None:
        self.bootstrap, self.topics, self.on_message = bootstrap, topics, on_message
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        await self.consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in self.topics for p in self.consumer.partitions_for_topic(t) or ()]
        self.consumer.assign(tps)
        for tp, end in (await self.consumer.end_offsets(tps)).items():
            self.consumer.seek(tp, end)  # explicit: seek_to_end races with the first fetch
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
            now = time.time()
            for messages in batches.values():
                for message in messages:
                    self.on_message(now, message.value)

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.consumer.stop()


async def open_loop(rate: float, duration: float, fire: Any, progress: Any) -> float:
    """Call fire(seq, scheduled_time) on a fixed timeline; return the wall-clock start."""
    loop = asyncio.get_running_loop()
    start_mono, start_wall = loop.time(), time.time()
    total = int(rate * duration)
    next_report = 1.0
    for i in range(total):
        offset = i / rate
        delay = start_mono + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        fire(i, start_wall + offset)
        if offset >= next_report:
            progress(offset)
            next_report += 1.0
    return start_wall


# ---------------------------------------------------------------- our stack


@dataclass
class Wallet:
    id: str
    user_id: str
    hot: bool


async def prepare_wallets(config: Config, hot: int, cold: int) -> list[Wallet]:
    """Reuse the wallets of an earlier run while they still hold money; otherwise open new ones."""
    saved = localinfra.state_dir(config) / "bench-wallets.json"
    pool = await asyncpg.create_pool(config.postgres.dsn, min_size=1, max_size=2)
    try:
        if saved.exists():
            wallets = [Wallet(**w) for w in json.loads(saved.read_text())]
            if sum(w.hot for w in wallets) == hot and len(wallets) == hot + cold:
                rich = await pool.fetchval(
                    "SELECT count(*) FROM wallets WHERE id = ANY($1::uuid[]) AND balance >= $2",
                    [w.id for w in wallets],
                    COLD_BALANCE // 10,
                )
                if rich == len(wallets):
                    say(f"reusing {len(wallets)} wallets from {saved}")
                    return wallets
        wallets = [Wallet(str(uuid.uuid4()), str(uuid.uuid4()), i < hot) for i in range(hot + cold)]
        say(f"opening {hot} hot and {cold} cold wallets through the wallet API...")
        base = f"http://127.0.0.1:{config.wallet_api.port}/api/v1"
        limit = asyncio.Semaphore(20)
        async with aiohttp.ClientSession(headers=admin_headers(config)) as session:

            async def open_one(w: Wallet) -> None:
                async with limit:
                    async with session.post(f"{base}/wallets", json={"user_id": w.user_id, "currency": "USD"}) as r:
                        w.id = (await r.json())["id"]
                    body = {"type": "income", "amount": HOT_BALANCE if w.hot else COLD_BALANCE, "currency": "USD"}
                    async with session.post(f"{base}/wallet/{w.id}/movement", json=body) as r:
                        if r.status not in (201, 202):
                            raise RuntimeError(f"funding {w.id}: HTTP {r.status} {await r.text()}")

            await asyncio.gather(*(open_one(w) for w in wallets))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the payment API checks wallets in the views
            funded = await pool.fetchval(
                "SELECT count(*) FROM wallets WHERE id = ANY($1::uuid[]) AND balance > 0", [w.id for w in wallets]
            )
            if funded == len(wallets):
                break
            await asyncio.sleep(0.2)
        saved.write_text(json.dumps([asdict(w) for w in wallets]))
        return wallets
    finally:
        await pool.close()


def admin_headers(config: Config) -> dict[str, str]:
    """The load pays from many users' wallets, which only an admin may do in one credential."""
    return {"Authorization": f"Bearer {issue_token(config.auth, 'bench-load', ['admin'], ttl_s=24 * 3600)}"}


class OurStack:
    def __init__(self, config: Config, wallets: list[Wallet], hot_share: float, fail_share: float) -> None:
        self.config, self.wallets = config, wallets
        self.hot = [w for w in wallets if w.hot]
        self.cold = [w for w in wallets if not w.hot]
        self.hot_share, self.fail_share = hot_share, fail_share
        self.codec = make_codec(config.kafka.schema_registry_url or None)
        self.url = f"http://127.0.0.1:{config.payment_api.port}/api/v1/payments"
        self.seq = 0  # amounts are unique, so a terminal event names the request that caused it
        self.scheduled: dict[tuple[str, int], float] = {}  # (user, amount) -> scheduled send time
        self.terminal: dict[tuple[str, int], tuple[float, str, str]] = {}  # -> (arrival, payment id, type)
        self.in_pg: dict[str, float] = {}
        self.tail = Tail(config.kafka.bootstrap_servers, [PAYMENT_SUCCESS.name, PAYMENT_FAILED.name], self.on_event)
        self.rng = random.Random(6)

    def on_event(self, arrived: float, value: bytes) -> None:
        try:
            event = self.codec.decode(value)
        except EventDecodeError:
            return
        key = (event["user_id"], event["amount"]["amount"])
        if key in self.scheduled and key not in self.terminal:
            self.terminal[key] = (arrived, event["payment_id"], event["envelope"]["event_type"])

    async def watch_projection(self, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
        """Poll the view for payments whose terminal event arrived; 10 ms resolution."""
        while not stop.is_set():
            waiting = [pid for _, pid, _ in self.terminal.values() if pid not in self.in_pg]
            if waiting:
                rows = await pool.fetch(
                    "SELECT id::text FROM payments WHERE id = ANY($1::uuid[]) AND status_rank >= 2", waiting
                )
                now = time.time()
                for row in rows:
                    self.in_pg[row["id"]] = now
            await asyncio.sleep(0.01)

    async def run(self, rate: float, duration: float) -> Step:
        step = Step("ours", rate, duration)
        mine: list[tuple[str, int]] = []
        tasks: set[asyncio.Task[None]] = set()
        connector = aiohttp.TCPConnector(limit=4000)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60), headers=admin_headers(self.config)
        ) as session:

            async def post(key: tuple[str, int], wallet: Wallet, scheduled: float) -> None:
                body = {
                    "user_id": wallet.user_id,
                    "amount": key[1],
                    "currency": "USD",
                    "payment_method_type": "wallet",
                    "wallet_id": wallet.id,
                    "description": "bench",
                }
                try:
                    async with session.post(self.url, json=body) as response:
                        await response.read()
                        ok = response.status == 201
                except aiohttp.ClientError:
                    ok = False
                step.http_ms.append((time.time() - scheduled) * 1000)
                step.http_errors += not ok

            def fire(_: int, scheduled: float) -> None:
                self.seq += 1
                wallet = self.rng.choice(self.hot if self.rng.random() < self.hot_share else self.cold)
                amount = (FAIL_AMOUNT if self.rng.random() < self.fail_share else 100) + self.seq
                key = (wallet.user_id, amount)
                self.scheduled[key] = scheduled
                mine.append(key)
                task = asyncio.create_task(post(key, wallet, scheduled))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

            def progress(t: float) -> None:
                done = sum(k in self.terminal for k in mine)
                say(f"ours {rate:g}/s  t={t:4.0f}s  sent={len(mine)}  terminal={done}  http in flight={len(tasks)}")

            start = await open_loop(rate, duration, fire, progress)
            step.sent = len(mine)
            drain_until = time.monotonic() + self.config.payment_api.outcome_timeout_s + 10
            while time.monotonic() < drain_until and (tasks or not all(k in self.terminal for k in mine)):
                await asyncio.sleep(0.1)
            for task in tasks:
                task.cancel()
        await asyncio.sleep(0.2)  # the projection watcher's last poll
        for key in mine:
            if key in self.terminal:
                arrived, payment_id, event_type = self.terminal[key]
                step.completed += 1
                step.failed += event_type == "PaymentFailed"
                step.completed_in_window += arrived <= start + duration
                step.latencies_ms.append((arrived - self.scheduled[key]) * 1000)
                step.latency_at.append(self.scheduled[key] - start)
                if payment_id in self.in_pg:
                    step.projection_lag_ms.append(max(0.0, (self.in_pg[payment_id] - arrived) * 1000))
        return step


# ---------------------------------------------------------------- the raw chain


async def relay(bootstrap: str, source: str, target: str, group: str, linger_ms: int, commit_ms: int) -> None:
    """One hop of the raw chain: what a worker does minus decoding, logic, state and encoding."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        auto_commit_interval_ms=commit_ms,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=linger_ms)
    await consumer.start()
    await producer.start()
    try:
        while True:
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                for message in messages:
                    await producer.send(target, message.value, key=message.key)
    finally:
        await producer.stop()
        await consumer.stop()


class RawChain:
    def __init__(self, config: Config, linger_ms: int, commit_ms: int) -> None:
        self.config, self.linger_ms, self.commit_ms = config, linger_ms, commit_ms
        run = dt.datetime.now().strftime("%H%M%S")
        self.topics = [f"bench.raw.{run}.{i}" for i in range(RELAY_HOPS + 1)]
        self.relays: list[subprocess.Popen[bytes]] = []
        self.arrivals: dict[int, float] = {}
        self.scheduled: dict[int, float] = {}
        self.seq = 0

    def on_message(self, arrived: float, value: bytes) -> None:
        _, seq = STAMP.unpack(value[: STAMP.size])
        self.arrivals.setdefault(seq, arrived)

    async def start(self) -> None:
        admin = admin_client(self.config.kafka)
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=self.config.kafka.partitions, replication_factor=1) for t in self.topics]
        )
        for future in futures.values():
            future.result()
        for i in range(RELAY_HOPS):
            args = [self.topics[i], self.topics[i + 1], f"{self.topics[0]}.relay{i}"]
            extra = ["--linger-ms", str(self.linger_ms), "--commit-ms", str(self.commit_ms)]
            self.relays.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "devtools.bench",
                        "relay",
                        self.config.kafka.bootstrap_servers,
                        *args,
                        *extra,
                    ],
                    cwd=localinfra.ROOT,
                )
            )
        self.tail = Tail(self.config.kafka.bootstrap_servers, [self.topics[-1]], self.on_message)
        await self.tail.start()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.config.kafka.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=self.linger_ms,
        )
        await self.producer.start()
        say(f"raw chain: {RELAY_HOPS} relay processes over {len(self.topics)} topics; waiting for them to join...")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # one message per partition must make it through before timing starts
            probes = []
            for _ in range(self.config.kafka.partitions * 4):
                self.seq -= 1
                probes.append(self.seq)
                await self.producer.send(self.topics[0], STAMP.pack(time.time(), self.seq), key=uuid.uuid4().bytes)
            await asyncio.sleep(1.0)
            if all(p in self.arrivals for p in probes):
                return
        raise RuntimeError("the raw chain relays did not start passing messages within 60 s")

    def pids(self) -> dict[str, list[int]]:
        return {f"relay-{i + 1}": [p.pid] for i, p in enumerate(self.relays)}

    async def run(self, rate: float, duration: float) -> Step:
        step = Step("raw", rate, duration)
        first = self.seq = max(self.seq, 0)
        pending: set[asyncio.Future[Any]] = set()

        def fire(_: int, scheduled: float) -> None:
            self.seq += 1
            self.scheduled[self.seq] = scheduled
            task = asyncio.ensure_future(
                self.producer.send(self.topics[0], STAMP.pack(scheduled, self.seq), key=uuid.uuid4().bytes)
            )
            pending.add(task)
            task.add_done_callback(pending.discard)

        def progress(t: float) -> None:
            done = sum(1 for s in range(first + 1, self.seq + 1) if s in self.arrivals)
            say(f"raw  {rate:g}/s  t={t:4.0f}s  sent={self.seq - first}  arrived={done}")

        start = await open_loop(rate, duration, fire, progress)
        mine = range(first + 1, self.seq + 1)
        step.sent = len(mine)
        drain_until = time.monotonic() + 15
        while time.monotonic() < drain_until and not all(s in self.arrivals for s in mine):
            await asyncio.sleep(0.1)
        for seq in mine:
            if seq in self.arrivals:
                step.completed += 1
                step.completed_in_window += self.arrivals[seq] <= start + duration
                step.latencies_ms.append((self.arrivals[seq] - self.scheduled[seq]) * 1000)
                step.latency_at.append(self.scheduled[seq] - start)
        return step

    async def stop(self) -> None:
        await self.producer.stop()
        await self.tail.stop()
        for process in self.relays:
            process.terminate()
        for process in self.relays:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        admin_client(self.config.kafka).delete_topics(self.topics)


# ---------------------------------------------------------------- orchestration


def stack_settings(config: Config) -> dict[str, Any]:
    """What shapes the numbers, read from the code and configuration that run."""
    from services import payment_api
    from streams.app import make_app

    conf = make_app("bench-settings", config, config.payment_worker.web_port, "memory://").conf
    return {
        "environment": config.environment,
        "cores": os.cpu_count(),
        "partitions": config.kafka.partitions,
        "workers": "1 payment-worker + 1 wallet-worker process, agent concurrency 1",
        "broker_commit_interval_s": conf.broker_commit_interval,
        "broker_commit_every": conf.broker_commit_every,
        "producer_linger_ms": round(conf.producer_linger * 1000),
        "producer_acks": conf.producer_acks,
        "producer_max_batch_size": conf.producer_max_batch_size,
        "stream_buffer_maxsize": conf.stream_buffer_maxsize,
        "broker_max_poll_records": conf.broker_max_poll_records,
        "processing_guarantee": str(conf.processing_guarantee),
        "api_publisher": "acks=all, idempotent, linger_ms=1",
        "api_wait": (
            f"terminal event from Kafka, then the view row every {payment_api.SETTLE_POLL_S * 1000:.0f} ms"
            if hasattr(payment_api, "SETTLE_POLL_S")
            else f"poll PostgreSQL every {payment_api.POLL_S * 1000:.0f} ms"
        )
        + f", up to {config.payment_api.outcome_timeout_s:g} s",
        "projector": "getmany 1000 records, one transaction per partition batch",
    }


def ensure_stack(config: Config) -> None:
    """Start what is missing; a process that is alive but reports unready is used anyway."""
    supervisor = devctl.Supervisor(config)
    missing = [p for p in devctl.processes(config) if not supervisor.pid(p.name)]
    if localinfra.kafka_reachable(config) and not missing:
        say(f"reusing the running {config.environment} environment")
        return
    say(f"bringing the {config.environment} environment up ({', '.join(p.name for p in missing)} not running)...")
    localinfra.up(config)
    devctl.setup(config)
    for process in missing:
        supervisor.start(process)
    for process in missing:
        try:
            supervisor.wait_healthy(process, timeout=60)
        except localinfra.InfraError as exc:
            if not supervisor.pid(process.name):
                raise
            say(f"warning: {exc}; it runs, so the benchmark goes on")


async def measure(step_coro: Any, pids: dict[str, list[int]], bootstrap: str, prefix: str | None) -> Step:
    records_before = await end_offsets_total(bootstrap, prefix)
    window, busy_before = CpuWindow.open(pids), machine_busy()
    started = time.monotonic()
    step: Step = await step_coro
    step.cpu = window.close(pids)
    busy_after = machine_busy()
    step.machine_busy_pct = round(100 * (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1]), 1)
    step.records_per_s = round(
        (await end_offsets_total(bootstrap, prefix) - records_before) / (time.monotonic() - started), 1
    )
    return step


async def bench(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    settings = stack_settings(config)
    rates = [args.rate] if args.mode == "fixed" else list(MAX_LADDER)
    step_s = args.duration if args.mode == "fixed" else args.step_duration
    wallets = await prepare_wallets(config, args.hot, args.cold)
    ours = OurStack(config, wallets, args.hot_share, args.fail_share)
    pool = await asyncpg.create_pool(config.postgres.dsn, min_size=1, max_size=2)
    await ours.tail.start()
    stop = asyncio.Event()
    watcher = asyncio.create_task(ours.watch_projection(pool, stop))
    our_steps: list[Step] = []
    bench_pid = {"bench (load generator)": [os.getpid()]}
    try:
        await ours.run(5, 2)  # warm-up: connections, faust fetchers, the first PostgreSQL plans
        for rate in rates:
            say(f"our stack at {rate:g} payments/s for {step_s:g} s")
            step = await measure(
                ours.run(rate, step_s), {**stack_pids(config), **bench_pid}, config.kafka.bootstrap_servers, None
            )
            our_steps.append(step)
            say(f"  -> {step.throughput:.1f}/s completed, p99 {percentile(step.latencies_ms, 0.99):.0f} ms")
            if args.mode == "max" and not step.sustained(args.slo_p99_ms):
                break
    finally:
        stop.set()
        await asyncio.gather(watcher, return_exceptions=True)
        await ours.tail.stop()
        await pool.close()
    chain = RawChain(config, int(settings["producer_linger_ms"]), int(settings["broker_commit_interval_s"] * 1000))
    raw_steps: list[Step] = []
    await chain.start()
    try:
        await chain.run(5, 2)
        for rate in rates:
            say(f"raw chain at {rate:g} messages/s for {step_s:g} s")
            pids = {**chain.pids(), "kafka": stack_pids(config).get("kafka", []), **bench_pid}
            step = await measure(chain.run(rate, step_s), pids, config.kafka.bootstrap_servers, "bench.raw.")
            raw_steps.append(step)
            say(f"  -> {step.throughput:.1f}/s completed, p99 {percentile(step.latencies_ms, 0.99):.0f} ms")
            if args.mode == "max" and not step.sustained(args.slo_p99_ms):
                break
    finally:
        await chain.stop()
    return {"settings": settings, "ours": our_steps, "raw": raw_steps}


def headline(steps: list[Step], mode: str, slo: float) -> Step:
    """The step to compare: the only one, or in max mode the fastest that met the target."""
    if mode == "fixed":
        return steps[0]
    good = [s for s in steps if s.sustained(slo)]
    return max(good, key=lambda s: s.throughput) if good else steps[0]


def table(ours: Step, raw: Step) -> str:
    o, r = ours.summary(), raw.summary()
    rows = [
        ("offered rate /s", "rate", "{:.0f}"),
        ("completed /s (in window)", "throughput", "{:.1f}"),
        ("sent / completed", None, ""),
        ("latency p50 ms", "p50_ms", "{:.1f}"),
        ("latency p95 ms", "p95_ms", "{:.1f}"),
        ("latency p99 ms", "p99_ms", "{:.1f}"),
        ("latency max ms", "max_ms", "{:.1f}"),
        ("Kafka records /s", "records_per_s", "{:.0f}"),
    ]
    lines = [f"{'':<28}{'ours':>14}{'raw chain':>14}{'ratio':>9}"]
    for label, key, fmt in rows:
        if key is None:
            lines.append(f"{label:<28}{f'{ours.sent}/{ours.completed}':>14}{f'{raw.sent}/{raw.completed}':>14}")
            continue
        ratio = o[key] / r[key] if r[key] else float("nan")
        lines.append(f"{label:<28}{fmt.format(o[key]):>14}{fmt.format(r[key]):>14}{ratio:>9.2f}")
    lines.append(f"{'failed (insufficient funds)':<28}{ours.failed:>14}")
    lines.append(f"{'HTTP errors':<28}{ours.http_errors:>14}")
    lines.append(f"{'POST response p50/p99 ms':<28}{'{:.0f}/{:.0f}'.format(o['http_p50_ms'], o['http_p99_ms']):>14}")
    lag = "{:.0f}/{:.0f}/{:.0f}".format(
        o["projection_lag_p50_ms"], o["projection_lag_p99_ms"], o["projection_lag_max_ms"]
    )
    lines.append(f"{'projection lag p50/p99/max':<28}{lag:>14}  ms (terminal event -> PostgreSQL row, 10 ms polls)")
    lines.append(f"{'machine CPU busy %':<28}{ours.machine_busy_pct:>14.0f}{raw.machine_busy_pct:>14.0f}")
    lines.append("")
    lines.append(f"{'process':<26}{'CPU s':>8}{'CPU %':>8}{'RSS MB':>9}")
    for step in (ours, raw):
        for name, usage in sorted(step.cpu.items(), key=lambda kv: -kv[1]["cpu_s"]):
            lines.append(
                f"{step.system + ' ' + name:<26}{usage['cpu_s']:>8.1f}{usage['cpu_pct']:>8.0f}{usage['rss_mb']:>9.0f}"
            )
    return "\n".join(lines)


def plot(path: Path, result: dict[str, Any], mode: str, ours: Step, raw: Step) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for step, colour in ((ours, "tab:blue"), (raw, "tab:orange")):
        lat = sorted(step.latencies_ms)
        if lat:
            left.plot(
                lat, [i / len(lat) for i in range(len(lat))], color=colour, label=f"{step.system} at {step.rate:g}/s"
            )
    left.set(
        xscale="log", xlabel="end-to-end latency, ms (log)", ylabel="share of payments at or below", title="Latency CDF"
    )
    left.grid(True, which="both", alpha=0.3)
    left.legend()
    if mode == "fixed":
        for step, colour in ((ours, "tab:blue"), (raw, "tab:orange")):
            bins: dict[int, list[float]] = {}
            for at, ms in zip(step.latency_at, step.latencies_ms, strict=True):
                bins.setdefault(int(at), []).append(ms)
            xs = sorted(bins)
            right.plot(xs, [percentile(bins[x], 0.5) for x in xs], color=colour, label=f"{step.system} p50")
            right.plot(
                xs, [percentile(bins[x], 0.99) for x in xs], color=colour, linestyle="--", label=f"{step.system} p99"
            )
        right.set(
            xlabel="seconds into the run (send time)",
            ylabel="latency, ms (log)",
            yscale="log",
            title="Latency over time",
        )
    else:
        for system, colour in (("ours", "tab:blue"), ("raw", "tab:orange")):
            steps = result[system]
            rates = [s.rate for s in steps]
            right.plot(
                rates, [percentile(s.latencies_ms, 0.5) for s in steps], "o-", color=colour, label=f"{system} p50"
            )
            right.plot(
                rates, [percentile(s.latencies_ms, 0.99) for s in steps], "o--", color=colour, label=f"{system} p99"
            )
        right.set(
            xlabel="offered rate /s (log)",
            ylabel="latency, ms (log)",
            xscale="log",
            yscale="log",
            title="Latency by load",
        )
    right.grid(True, which="both", alpha=0.3)
    right.legend()
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for axis in (left.xaxis, right.xaxis, right.yaxis):
        axis.set_major_formatter(ScalarFormatter())  # 100, not 10^2; minor ticks unlabelled
        axis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["relay"]:
        parser = argparse.ArgumentParser(prog="python -m devtools.bench relay")
        for name in ("bootstrap", "source", "target", "group"):
            parser.add_argument(name)
        parser.add_argument("--linger-ms", type=int, default=1)
        parser.add_argument("--commit-ms", type=int, default=1000)
        a = parser.parse_args(argv[1:])
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(relay(a.bootstrap, a.source, a.target, a.group, a.linger_ms, a.commit_ms))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["fixed", "max"], default="fixed")
    parser.add_argument("--rate", type=float, default=50, help="payments (and raw messages) per second, fixed mode")
    parser.add_argument("--duration", type=float, default=20, help="seconds of load per system, fixed mode")
    parser.add_argument("--step-duration", type=float, default=6, help="seconds per rate step, max mode")
    parser.add_argument("--slo-p99-ms", type=float, default=1000, help="max mode: a step counts if p99 stays below")
    # Not $ENVIRONMENT: an exported ENVIRONMENT=test must not point the load at the test system.
    parser.add_argument("--environment", default="bench")
    parser.add_argument("--hot", type=int, default=5)
    parser.add_argument("--cold", type=int, default=200)
    parser.add_argument("--hot-share", type=float, default=0.5, help="share of payments on the hot wallets")
    parser.add_argument("--fail-share", type=float, default=0.1, help="share of payments over the balance")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    config = load_config(args.environment)
    ensure_stack(config)
    load_before = os.getloadavg()
    result = asyncio.run(bench(args, config))
    ours = headline(result["ours"], args.mode, args.slo_p99_ms)
    raw = headline(result["raw"], args.mode, args.slo_p99_ms)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    json_path, png_path = RESULTS / f"bench-{stamp}.json", RESULTS / f"bench-{stamp}.png"
    print()
    print(
        f"== {args.mode} mode, {config.environment}, {os.cpu_count()} cores, load average before "
        f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    if args.mode == "max":
        print(f"max sustained (>= 90% of offered completed in the window, p99 <= {args.slo_p99_ms:g} ms):")
        for step in (*result["ours"], *result["raw"]):
            s = step.summary()
            print(
                f"  {step.system:<5}{step.rate:>7g}/s -> {s['throughput']:>8.1f}/s  p50 {s['p50_ms']:>7.0f}  "
                f"p99 {s['p99_ms']:>7.0f} ms  {'ok' if step.sustained(args.slo_p99_ms) else 'over'}"
            )
    print(table(ours, raw))
    print()
    for key, value in result["settings"].items():
        print(f"  {key:<26}{value}")
    payload = {
        "mode": args.mode,
        "args": vars(args),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "settings": result["settings"],
        "headline": {"ours": ours.summary(), "raw": raw.summary()},
        "steps": {k: [s.summary() for s in result[k]] for k in ("ours", "raw")},
    }
    json_path.write_text(json.dumps(payload, indent=2, default=str))
    plot(png_path, result, args.mode, ours, raw)
    say(f"wrote {json_path.relative_to(localinfra.ROOT)} and {png_path.relative_to(localinfra.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
