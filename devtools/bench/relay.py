"""The raw chain: minimal relay processes (consume, produce, nothing else), as many hops as a
wallet payment crosses, on the same broker."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka.admin import NewTopic

from connectors.config import Config
from connectors.credentials import ADMIN
from connectors.kafka_admin import admin_client
from connectors.kafka_security import KafkaAccess, kafka_access
from devtools import localinfra
from devtools.bench.measure import RELAY_HOPS, STAMP, Step, Tail, open_loop, say

# ---------------------------------------------------------------- the raw chain

RAW_KINDS = ("aiokafka", "faust")


async def relay(access: KafkaAccess, source: str, target: str, group: str, linger_ms: int, commit_ms: int) -> None:
    """One hop of the raw chain: what a worker does minus decoding, logic, state and encoding.
    The raw chain's topics and groups are the benchmark's own: it runs as admin, as setup does."""
    consumer = AIOKafkaConsumer(
        source,
        **access.aiokafka(),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        auto_commit_interval_ms=commit_ms,
    )
    producer = AIOKafkaProducer(**access.aiokafka(), acks="all", enable_idempotence=True, linger_ms=linger_ms)
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


def faust_relay(environment: str, source: str, target: str, group: str) -> None:
    """One hop of the faust chain: a worker's app, agent and batching (`streams.app`), with no
    decoding, logic, table or delivery guard: what faust itself costs a hop as our workers use it."""
    # Imported here: the aiokafka relays must not load faust and the workers' code.
    import faust

    from connectors.config import load_config
    from streams.app import make_app, raw_topic
    from streams.batching import take_available

    config = load_config(environment)
    with socket.socket() as probe:  # web is off, but faust wants a valid port (and names the data dir after it)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = make_app(group, config, port, "memory://", ADMIN)
    app.conf.web_enabled = False
    out = raw_topic(app, target, config.kafka.partitions)

    @app.agent(raw_topic(app, source, config.kafka.partitions), concurrency=1, name=f"{group}.relay")
    async def hop(stream: faust.StreamT) -> None:
        async for events in take_available(stream, config.processing.batch_max):
            for event in events:
                await out.send(key=event.message.key, value=event.message.value, force=True)

    # INFO, as the workers run (`worker -l info`): below WARN faust drops its terminal spinner,
    # whose handler sets the root logger to DEBUG, so every log.debug in faust and aiokafka would
    # build a record; that overstated faust's cost by 20-25 %.
    faust.Worker(app, loglevel="INFO", quiet=True).execute_from_commandline()


class RawChain:
    def __init__(self, config: Config, linger_ms: int, commit_ms: int, kind: str = "aiokafka") -> None:
        self.config, self.linger_ms, self.commit_ms, self.kind = config, linger_ms, commit_ms, kind
        self.access = kafka_access(config, ADMIN)
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
        admin = admin_client(self.access)
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=self.config.kafka.partitions, replication_factor=1) for t in self.topics]
        )
        for future in futures.values():
            future.result()
        for i in range(RELAY_HOPS):
            args = [self.topics[i], self.topics[i + 1], f"{self.topics[0]}.relay{i}"]
            extra = ["--linger-ms", str(self.linger_ms), "--commit-ms", str(self.commit_ms)]
            extra += ["--kind", self.kind, "--environment", self.config.environment]
            self.relays.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "devtools.bench",
                        "relay",
                        *args,
                        *extra,
                    ],
                    cwd=localinfra.ROOT,
                )
            )
        self.tail = Tail(self.access, [self.topics[-1]], self.on_message)
        await self.tail.start()
        self.producer = AIOKafkaProducer(
            **self.access.aiokafka(),
            acks="all",
            enable_idempotence=True,
            linger_ms=self.linger_ms,
        )
        await self.producer.start()
        say(f"raw chain: {RELAY_HOPS} {self.kind} relays over {len(self.topics)} topics; waiting for them to join...")
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
            exited = [f"relay-{n + 1}: {p.returncode}" for n, p in enumerate(self.relays) if p.poll() is not None]
            if exited:
                raise RuntimeError(f"the raw chain cannot start, relays exited: {', '.join(exited)}")
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
        admin_client(self.access).delete_topics(self.topics)
