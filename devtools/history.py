"""A large history on the log, fast: N wallet payments over M wallets, written straight to Kafka
in the real formats, keys and partitions, so that restart, memory and rebuild costs can be
measured with millions of payments instead of an empty broker.

It does not imitate the workers: it runs their own saga steps (`streams.wallet_steps`,
`streams.payment_steps`) in this process, with dicts for their tables and a queue for their
sends, routes every record to the step its topic feeds, exactly as the workers' agents would,
and writes everything the steps sent (openings, commands, movements, balance updates, payment
events) plus the final table rows as changelog records. The workers' consumer groups are then
moved past what was written, so they start with the history already in their tables; the
projector and the auditor read it like any other history.

    python -m devtools.history load --payments 1000000 --wallets 100000

Stop the workers first (`make stop`, or at least the two workers): their groups' offsets can
only be moved while no member is running.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.avro import make_codec
from connectors.config import Config, load_config
from connectors.credentials import ADMIN as ADMIN_PRINCIPAL
from connectors.kafka_security import kafka_access
from connectors.log_reader import partition_for
from connectors.topics import (
    MOVEMENTS_CHANGELOG,
    PAYMENT_CREATED,
    PAYMENT_WORKER,
    PAYMENTS_CHANGELOG,
    WALLET_MOVEMENT_REQUIRED,
    WALLET_WORKER,
    WALLETS_CHANGELOG,
)
from domain import payment as payment_domain
from domain.access import ADMIN, Principal
from domain.events import EventMeta
from domain.ids import derive_id
from domain.money import Money
from streams.envelope import actor_fields, command_record, to_record
from streams.payment_deadlines import DeadlineIndex
from streams.payment_steps import PaymentSteps
from streams.payment_worker import SOURCES, step_of
from streams.processing import Handler
from streams.wallet_steps import WalletSteps

LOADER = Principal("history-loader", frozenset({ADMIN}))  # money it opens with has a named source
DAY_MS = 86_400_000
PAYMENT_AMOUNTS = (500, 1_250, 2_000, 4_999, 10_000)  # minor units


class _Nothing:
    async def __call__(self) -> None:
        """The loader's tables are dicts: every write is durable at once."""


@dataclasses.dataclass
class Clock:
    """History time: payments spread evenly over `days` up to now."""

    now_ms: int

    def __call__(self) -> int:
        return self.now_ms


@dataclasses.dataclass
class Saga:
    """Both workers' steps in one process; `sent` is what they published, in order."""

    clock: Clock
    wallets: dict[str, Any] = dataclasses.field(default_factory=dict)
    movements: dict[str, Any] = dataclasses.field(default_factory=dict)
    payments: dict[str, Any] = dataclasses.field(default_factory=dict)
    sent: list[tuple[str, str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    queue: deque[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=deque)
    routes: dict[str, Handler] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        wallet = WalletSteps(self.wallets, self.movements, self.send, _Nothing(), now=self.clock)
        deadlines = DeadlineIndex({})  # wallet payments never wait on a provider: nothing is open
        payment = PaymentSteps(self.payments, self.send, _Nothing(), {}, DAY_MS, deadlines, now=self.clock)
        self.routes = {spec.name: step for spec, step in step_of(payment).items()}
        self.routes[WALLET_MOVEMENT_REQUIRED.name] = wallet.process_movement
        assert {s.name for s in SOURCES} <= set(self.routes)

    async def send(self, topic: str, key: bytes | None, record: dict[str, Any]) -> None:
        assert key is not None, f"every record on {topic} is keyed by its aggregate"
        self.sent.append((topic, key.decode(), record))
        if topic in self.routes:
            self.queue.append((topic, record))

    async def run(self, topic: str, key: str, record: dict[str, Any]) -> None:
        """Publish `record` and let every step it leads to run, until the saga rests."""
        await self.send(topic, key.encode(), record)
        while self.queue:
            next_topic, next_record = self.queue.popleft()
            await self.routes[next_topic](next_record)


def opening(wallet_id: str, user_id: str, balance: int, at_ms: int) -> dict[str, Any]:
    meta = EventMeta(derive_id("history-opening", wallet_id), at_ms, wallet_id, None, *actor_fields(LOADER))
    return command_record(
        "WalletOpenRequested", meta, wallet_id=wallet_id, user_id=user_id, currency="USD", opening_balance=balance
    )


def payment_created(payment_id: str, user_id: str, wallet_id: str, amount: int, at_ms: int) -> dict[str, Any]:
    payer = Principal(user_id, frozenset({"user"}))
    meta = EventMeta(derive_id("PaymentCreated", payment_id), at_ms, payment_id, None, *actor_fields(payer))
    created = payment_domain.RequestPayment(
        meta, payment_id, user_id, Money(amount, "USD"), "wallet", wallet_id, None, None, "history", None
    )
    return to_record(created)


class Writer:
    """Encodes and produces in bulk, each record to the partition its key's aggregate lives on."""

    def __init__(self, config: Config) -> None:
        self.partitions = config.kafka.partitions
        self.codec = make_codec(config.kafka.schema_registry_url or None)
        self.producer = Producer(
            {
                **kafka_access(config, ADMIN_PRINCIPAL).confluent(),
                "linger.ms": 20,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 500_000,
                "enable.idempotence": True,
            }
        )
        self.written = 0
        self._partition_of: dict[str, int] = {}

    def partition(self, key: str) -> int:
        found = self._partition_of.get(key)
        if found is None:
            found = partition_for(key, self.partitions)
            if len(self._partition_of) < 1_000_000:
                self._partition_of[key] = found
        return found

    def event(self, topic: str, key: str, record: dict[str, Any]) -> None:
        self._produce(topic, key.encode(), self.codec.encode(record), self.partition(key))

    def table_row(self, topic: str, key: str, value: dict[str, Any], aggregate: str) -> None:
        """A faust table row as faust writes it (JSON key and value), on the changelog partition of
        the event that wrote it: the partition of `aggregate`, the source topic's key."""
        encoded_key = json.dumps(key).encode()
        self._produce(topic, encoded_key, json.dumps(value).encode(), self.partition(aggregate))

    def _produce(self, topic: str, key: bytes, value: bytes, partition: int) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, partition=partition)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.written += 1
        if self.written % 10_000 == 0:
            self.producer.poll(0)

    def flush(self) -> None:
        left = self.producer.flush(120)
        if left:
            raise RuntimeError(f"{left} records not acknowledged by Kafka after 120 s")


def move_groups_to_end(config: Config) -> dict[str, int]:
    """The workers' groups resume after the history: its effects are already in their tables."""
    access = kafka_access(config, ADMIN_PRINCIPAL)  # setup's principal: it writes every topic and moves groups
    admin = AdminClient(access.confluent())
    consumer_settings = {**access.confluent(), "group.id": "history-loader-ends"}
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions

    probe = Consumer(consumer_settings)
    moved: dict[str, int] = {}
    try:
        for group, topics in (
            (WALLET_WORKER, [WALLET_MOVEMENT_REQUIRED.name]),
            (PAYMENT_WORKER, [s.name for s in SOURCES]),
        ):
            ends = []
            for topic in topics:
                for p in range(config.kafka.partitions):
                    _, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    ends.append(TopicPartition(topic, p, high))
            futures = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, ends)])
            for future in futures.values():
                future.result()
            moved[group] = len(ends)
    finally:
        probe.close()
    return moved


def progress(label: str, done: int, total: int, started: float) -> None:
    rate = done / max(time.monotonic() - started, 1e-6)
    left = (total - done) / rate if rate else 0
    print(f"[history] {label}: {done:,}/{total:,} ({rate:,.0f}/s, about {left:,.0f}s left)", flush=True)


@dataclasses.dataclass(frozen=True)
class Plan:
    environment: str
    payments: int
    wallets: int
    days: int
    seed: int
    shards: int


def write_shard(plan: Plan, shard: int) -> int:
    """One process's part: the wallets `i % shards == shard` and every payment from them."""
    return asyncio.run(_write_shard(plan, shard))


async def _write_shard(plan: Plan, shard: int) -> int:
    config = load_config(plan.environment)
    rng = random.Random(plan.seed * 1_000 + shard)
    namespace = uuid.UUID(int=random.Random(plan.seed).getrandbits(128))
    clock = Clock(int(time.time() * 1000) - plan.days * DAY_MS)
    saga, writer = Saga(clock), Writer(config)
    per_wallet = -(-plan.payments // plan.wallets)
    mine = range(shard, plan.wallets, plan.shards)
    for i in mine:
        wallet_id, user_id = str(uuid.uuid5(namespace, f"w{i}")), str(uuid.uuid5(namespace, f"u{i}"))
        await saga.run(
            WALLET_MOVEMENT_REQUIRED.name, wallet_id, opening(wallet_id, user_id, per_wallet * 10_000, clock.now_ms)
        )
    step_ms = max(1, (plan.days * DAY_MS) // max(plan.payments, 1))
    started, done, share = time.monotonic(), 0, plan.payments // plan.shards
    for i in range(plan.payments):
        holder = i % plan.wallets
        if holder % plan.shards != shard:
            continue
        wallet_id, user_id = str(uuid.uuid5(namespace, f"w{holder}")), str(uuid.uuid5(namespace, f"u{holder}"))
        payment_id = str(uuid.uuid5(namespace, f"p{i}"))
        clock.now_ms = int(time.time() * 1000) - plan.days * DAY_MS + i * step_ms
        created = payment_created(payment_id, user_id, wallet_id, rng.choice(PAYMENT_AMOUNTS), clock.now_ms)
        await saga.run(PAYMENT_CREATED.name, payment_id, created)
        write_settled(saga, writer)
        done += 1
        if shard == 0 and done % 50_000 == 0:
            progress(f"payments (shard 0 of {plan.shards})", done, share, started)
    write_settled(saga, writer)
    for wallet_id, row in saga.wallets.items():
        writer.table_row(WALLETS_CHANGELOG.name, wallet_id, row, wallet_id)
    writer.flush()
    return writer.written


def write_settled(saga: Saga, writer: Writer) -> None:
    """What a saga that came to rest sent, and the rows it will never write again: its payment's
    and its movements' (a wallet's row changes with its next payment, so it is written last)."""
    for topic, key, record in saga.sent:
        writer.event(topic, key, record)
    saga.sent.clear()
    for movement_id, row in saga.movements.items():
        writer.table_row(MOVEMENTS_CHANGELOG.name, movement_id, row, row["wallet_id"])
    for payment_id, row in saga.payments.items():
        writer.table_row(PAYMENTS_CHANGELOG.name, payment_id, row, payment_id)
    saga.movements.clear()
    saga.payments.clear()


def load(plan: Plan, say: Callable[[str], None]) -> None:
    started = time.monotonic()
    with ProcessPoolExecutor(plan.shards) as pool:
        written = sum(pool.map(write_shard, [plan] * plan.shards, range(plan.shards)))
    elapsed = time.monotonic() - started
    say(f"{written:,} records on the log in {elapsed:,.0f}s ({plan.payments / max(elapsed, 1e-6):,.0f} payments/s)")
    moved = move_groups_to_end(load_config(plan.environment))
    say(f"worker groups moved past the history: {moved}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.history", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    loading = sub.add_parser("load", help="write a synthetic history of wallet payments")
    loading.add_argument("--payments", type=int, default=10_000)
    loading.add_argument("--wallets", type=int, default=1_000)
    loading.add_argument("--days", type=int, default=90, help="the history spans this many days up to now")
    loading.add_argument("--seed", type=int, default=1, help="the same seed writes the same ids")
    loading.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="writers in parallel")
    args = parser.parse_args(argv)
    if args.payments < 0 or args.wallets < 1:
        parser.error("--payments must be >= 0 and --wallets >= 1")
    config = load_config()

    def say(message: str) -> None:
        print(f"[history] {message}", flush=True)

    say(
        f"{args.payments:,} payments over {args.wallets:,} wallets into {config.environment} ({args.processes} writers)"
    )
    load(Plan(config.environment, args.payments, args.wallets, args.days, args.seed, args.processes), say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
