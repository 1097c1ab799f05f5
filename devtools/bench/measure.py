"""What the benchmark measures with: process CPU, a step's latencies and throughput, the
log's traffic, a tail of the log, and an open-loop schedule."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from connectors.config import Config
from connectors.kafka_security import KafkaAccess
from connectors.log_reader import LogReader
from devtools import devctl, localinfra

RESULTS = localinfra.ROOT / "results"
# payment.created -> wallet.movement_required -> wallet.payment_operation.completed
# -> payment.success: three consume-produce steps (four before the wallet answered by payment).
RELAY_HOPS = 3
HOT_BALANCE = 10**11
COLD_BALANCE = 10**9
FAIL_AMOUNT = 10**13  # above any balance: insufficient_funds
MAX_LADDER = (25, 35, 50, 70, 100, 140, 200, 400, 800, 1600, 3200, 6400)
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


def stack_pids(config: Config, peers: tuple[str, ...] = ()) -> dict[str, list[int]]:
    """The system's processes by name, with the extra worker processes `peers` (scale-out)."""
    supervisor = devctl.Supervisor(config)
    names = [p.name for p in devctl.processes(config)] + list(peers)
    pids = {name: [pid] for name in names if (pid := supervisor.pid(name))}
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


def kafka_requests(config: Config) -> dict[str, float]:
    """Kafka requests each of our processes has sent so far (`kafka_client_requests_total` on its
    /metrics): unlike CPU time, requests per payment do not move with how busy the machine is."""
    counts = {}
    for process in devctl.processes(config):
        if process.health_port is None:
            continue
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{process.health_port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            continue
        counts[process.name] = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("kafka_client_requests_total{")
        )
    return counts


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
    accepted: int = 0  # 201: the API took the payment
    shed: int = 0  # 503/429: refused at capacity, at once
    shed_ms: list[float] = field(default_factory=list)  # how fast a refusal came
    drained_s: float = float("nan")  # after the window, until every accepted payment was terminal
    latencies_ms: list[float] = field(default_factory=list)
    latency_at: list[float] = field(default_factory=list)  # seconds since the step began
    http_ms: list[float] = field(default_factory=list)
    projection_lag_ms: list[float] = field(default_factory=list)
    records_per_s: float = 0.0
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    kafka_requests: dict[str, float] = field(default_factory=dict)  # by process, over the step
    machine_busy_pct: float = 0.0

    @property
    def throughput(self) -> float:
        return self.completed_in_window / self.duration

    def cpu_per_payment(self) -> dict[str, float]:
        """CPU milliseconds per completed payment, by process and in total over the system
        (every process but the load generator: our services, Kafka, PostgreSQL)."""
        if not self.completed:
            return {}
        per = {name: round(1000 * usage["cpu_s"] / self.completed, 2) for name, usage in self.cpu.items()}
        per["total (system)"] = round(sum(v for k, v in per.items() if not k.startswith("bench")), 2)
        return per

    def requests_per_payment(self) -> dict[str, float]:
        if not self.completed:
            return {}
        per = {name: round(n / self.completed, 2) for name, n in self.kafka_requests.items()}
        per["total (system)"] = round(sum(per.values()), 2)
        return per

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        result = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("latencies_ms", "latency_at", "http_ms", "projection_lag_ms", "shed_ms")
        }
        result.update(
            throughput=round(self.throughput, 1),
            p50_ms=percentile(lat, 0.50),
            p95_ms=percentile(lat, 0.95),
            p99_ms=percentile(lat, 0.99),
            max_ms=max(lat, default=float("nan")),
            shed_p99_ms=percentile(self.shed_ms, 0.99),
            cpu_ms_per_payment=self.cpu_per_payment(),
            kafka_requests_per_payment=self.requests_per_payment(),
            http_p50_ms=percentile(self.http_ms, 0.5),
            http_p99_ms=percentile(self.http_ms, 0.99),
            projection_lag_p50_ms=percentile(self.projection_lag_ms, 0.5),
            projection_lag_p99_ms=percentile(self.projection_lag_ms, 0.99),
            projection_lag_max_ms=max(self.projection_lag_ms, default=float("nan")),
        )
        return result

    def sustained(self, slo_p99_ms: float) -> bool:
        return self.throughput >= 0.9 * self.rate and percentile(self.latencies_ms, 0.99) <= slo_p99_ms


async def end_offsets_total(access: KafkaAccess, prefix: str | None) -> int:
    """Records on every topic (or those starting with prefix): the difference over a step is its traffic."""
    reader = LogReader(access)
    await reader.start()
    try:
        chosen = [
            t for t in reader.topics() if (t.startswith(prefix) if prefix else not t.startswith(("__", "bench.")))
        ]
        tps = reader.all_partitions(chosen)
        return sum((await reader.ends(tps)).values()) if tps else 0
    finally:
        await reader.stop()


class Tail:
    """Reads topics from their current end and hands every message to a callback with its arrival time."""

    def __init__(self, access: KafkaAccess, topics: list[str], on_message: Any) -> None:
        self.topics, self.on_message = topics, on_message
        self.reader = LogReader(access)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.reader.start()
        await self.reader.follow_from_end(self.topics)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            messages = await self.reader.fetch(timeout_ms=100, max_records=None)
            now = time.time()
            for message in messages:
                self.on_message(now, message.value)

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.reader.stop()


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
