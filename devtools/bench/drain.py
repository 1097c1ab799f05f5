"""Catch-up: a backlog of N wallet payments waits on payment.created while the payment worker is
stopped; the worker is started and the backlog drains. It prints how long that took, the longest
time nothing completed, and every process's CPU and Kafka requests a payment meanwhile.

    python -m devtools.bench.drain [--backlog 20000] [--environment bench]

Two questions the rate ladder does not answer: how fast the saga catches up after an outage of
its payment worker, and what a payment costs when every batch is as full as it gets (the floor
of the CPU per payment on this machine, whatever the latency)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import time
import uuid
from dataclasses import asdict, dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from connectors.avro import make_codec
from connectors.config import Config, load_config
from connectors.credentials import CONSOLE, PAYMENT_API
from connectors.kafka_io import EventPublisher
from connectors.kafka_security import KafkaAccess, kafka_access
from connectors.topics import PAYMENT_CREATED, PAYMENT_FAILED, PAYMENT_SUCCEEDED
from devtools import devctl
from devtools.bench.__main__ import ensure_stack
from devtools.bench.measure import RESULTS, CpuWindow, kafka_requests, say, stack_pids
from devtools.bench.stack import Wallet, prepare_wallets
from domain import payment as domain
from domain.access import Principal
from domain.events import EventMeta
from domain.ids import derive_id
from domain.money import Money
from streams.envelope import actor_fields, to_record

LOAD = Principal("bench-load", frozenset({"admin"}))  # as the rate ladder's load pays


async def terminal_count(access: KafkaAccess, partitions: int) -> int:
    consumer = AIOKafkaConsumer(**access.aiokafka(), group_id=None)
    await consumer.start()
    try:
        topics = (PAYMENT_SUCCEEDED.name, PAYMENT_FAILED.name)
        return sum(
            (await consumer.end_offsets([TopicPartition(t, p) for t in topics for p in range(partitions)])).values()
        )
    finally:
        await consumer.stop()


async def write_backlog(config: Config, wallets: list[Wallet], count: int) -> None:
    """PaymentCreated events as the payment API writes them, small enough that none runs dry."""
    publisher = EventPublisher(kafka_access(config, PAYMENT_API), make_codec(config.kafka.schema_registry_url or None))
    await publisher.start()
    rng = random.Random(7)
    try:
        for i in range(count):
            wallet, payment_id, now = rng.choice(wallets), str(uuid.uuid4()), int(time.time() * 1000)
            meta = EventMeta(derive_id("PaymentCreated", payment_id), now, payment_id, None, *actor_fields(LOAD))
            created = domain.RequestPayment(
                meta,
                payment_id,
                wallet.user_id,
                Money(1 + i % 7, "USD"),
                "wallet",
                wallet.id,
                None,
                None,
                "drain",
                None,
            )
            value = publisher.codec.encode(to_record(created))
            await publisher.producer.send(PAYMENT_CREATED.name, value, key=payment_id.encode())
        await publisher.producer.flush()
    finally:
        await publisher.stop()


@dataclass
class Drained:
    backlog: int
    drained_s: float
    longest_still_s: float
    cpu_ms_per_payment: dict[str, float]
    kafka_requests_per_payment: dict[str, float]

    @property
    def rate(self) -> float:
        return round(self.backlog / self.drained_s, 1)

    @property
    def total_ms_per_payment(self) -> float:
        return round(sum(self.cpu_ms_per_payment.values()), 2)


async def drain(config: Config, backlog: int) -> Drained:
    wallets = await prepare_wallets(config, 5, 200)
    supervisor = devctl.Supervisor(config)
    worker = next(p for p in devctl.processes(config) if p.name == "payment-worker")
    console = kafka_access(config, CONSOLE)
    supervisor.stop(worker.name)
    before = await terminal_count(console, config.kafka.partitions)
    say(f"payment worker stopped; writing a backlog of {backlog:,} wallet payments...")
    await write_backlog(config, wallets, backlog)
    supervisor.start(worker)
    started = time.monotonic()
    pids = stack_pids(config)
    window, requests_before = CpuWindow.open(pids), kafka_requests(config)
    done, last_progress, longest_still = 0, started, 0.0
    while done < backlog:
        await asyncio.sleep(2.0)
        now_done = await terminal_count(console, config.kafka.partitions) - before
        now = time.monotonic()
        if now_done > done:
            longest_still = max(longest_still, now - last_progress) if done else longest_still
            done, last_progress = now_done, now
        say(f"  {done:,}/{backlog:,} terminal after {now - started:.0f} s")
    wall = time.monotonic() - started
    cpu, requests_after = window.close(pids), kafka_requests(config)
    per_payment = {name: round(1000 * usage["cpu_s"] / backlog, 2) for name, usage in cpu.items()}
    requests = {
        name: round((n - requests_before[name]) / backlog, 2)
        for name, n in requests_after.items()
        if name in requests_before
    }
    return Drained(backlog, round(wall, 1), round(longest_still, 1), per_payment, requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.bench.drain", description=__doc__)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--environment", default="bench")
    args = parser.parse_args(argv)
    config = load_config(args.environment)
    ensure_stack(config)
    result = asyncio.run(drain(config, args.backlog))
    print(
        f"\n== drain of {args.backlog:,} payments: {result.drained_s} s ({result.rate}/s, from the worker's "
        f"start), the longest time nothing completed {result.longest_still_s} s"
    )
    requests = result.kafka_requests_per_payment
    for name, ms in sorted(result.cpu_ms_per_payment.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<22}{ms:>8.2f} ms/payment{requests.get(name, float('nan')):>8.2f} Kafka req/payment")
    print(f"  {'total':<22}{result.total_ms_per_payment:>8.2f} ms/payment")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"drain-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    summary = {**asdict(result), "rate": result.rate, "total_ms_per_payment": result.total_ms_per_payment}
    path.write_text(json.dumps(summary, indent=2))
    say(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
