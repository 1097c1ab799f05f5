"""The kill loop: at-least-once, proven. The whole system runs under the fault suite's mixed
load while one worker is SIGKILLed again and again, each time once it has emitted `every`
more outcomes since it came back (progress decides when, never a sleep). Afterwards every
command offset written to the worker's command topic during the loop must have an outcome,
no command may have been decided two different ways, and every wallet's applied outcomes must
form an unbroken chain (each version once, each balance the previous plus the movement): a
version without an outcome is money moved that nobody was told about. Finally the worker's
group must have committed everything it handled: a commit that stops moving is not a loss, but
the next restart would handle the whole backlog again.

    python -m tests.chaos.kill_loop wallet-worker payment-worker --kills 20
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition

from connectors.avro import EventDecodeError, SingleObjectCodec
from connectors.config import Config, load_config
from connectors.log_reader import read_messages
from connectors.topics import (
    PAYMENT_CREATED,
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    WALLET_MOVEMENT_REQUIRED,
    WALLET_MOVEMENT_UPDATES,
)
from devtools.devctl import Supervisor, processes
from devtools.localinfra import kafka_reachable
from tests.chaos.scenarios import Load, ensure_running, process_named
from tests.support.commits import commits_behind
from tests.support.kafka import reader

codec = SingleObjectCodec()
Event = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """A worker under test: its command topic, and how an outcome names the command it answers."""

    worker: str
    command_topic: str
    outcome_topics: tuple[str, ...]
    command_id: Callable[[Event], str]
    answers: Callable[[Event], str | None]  # the command id an outcome answers, or None


TARGETS = {
    # Every wallet outcome is caused by its command: causation id = the command's event id.
    "wallet-worker": Target(
        "wallet-worker",
        WALLET_MOVEMENT_REQUIRED.name,
        (WALLET_MOVEMENT_UPDATES.name,),
        lambda command: command["envelope"]["event_id"],
        lambda outcome: outcome["envelope"]["causation_id"],
    ),
    # A payment's saga ends in one terminal event, whatever happened on the way.
    "payment-worker": Target(
        "payment-worker",
        PAYMENT_CREATED.name,
        (PAYMENT_SUCCEEDED.name, PAYMENT_FAILED.name),
        lambda command: command["payment_id"],
        lambda outcome: outcome["payment_id"],
    ),
}


@dataclass
class Outcomes:
    """Outcomes seen live: per command id, the distinct event ids (a redelivery re-emits the same one)."""

    by_command: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    count: int = 0
    # wallet id -> version -> (movement id, signed amount, balance after), from applied outcomes
    chains: dict[str, dict[int, set[tuple[str, int, int]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set))
    )

    def add(self, event: Event, answered: str) -> None:
        self.by_command[answered].add(event["envelope"]["event_id"])
        self.count += 1
        if event["envelope"]["event_type"] == "MovementUpdated" and event["status"] == "applied":
            amount = event["amount"]["amount"] * (1 if event["type"] == "income" else -1)
            chain = self.chains[event["wallet_id"]]
            chain[event["wallet_version"]].add((event["movement_id"], amount, event["balance_after"]))

    def broken_chains(self) -> list[str]:
        """Per wallet opened during the loop (its version 1 seen): every version once, balances chained.
        Older wallets are left out: a redelivery may re-emit one of their outcomes from before the loop."""
        broken = []
        for wallet_id, chain in self.chains.items():
            if 1 not in chain:
                continue
            for version in range(1, max(chain) + 1):
                decided = chain.get(version, set())
                if len(decided) != 1:
                    broken.append(f"wallet {wallet_id} v{version}: {len(decided)} applied outcome(s) {sorted(decided)}")
                    continue
                (_, amount, balance), *_ = decided
                before = chain.get(version - 1, {("", 0, 0)})
                if len(before) == 1 and next(iter(before))[2] + amount != balance:
                    broken.append(f"wallet {wallet_id} v{version}: {balance} is not v{version - 1}'s {amount:+}")
        return broken


async def watch(config: Config, target: Target, outcomes: Outcomes, ready: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(**reader(config).aiokafka(), group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in target.outcome_topics for p in range(config.kafka.partitions)]
        consumer.assign(parts)
        for tp, end in (await consumer.end_offsets(parts)).items():
            consumer.seek(tp, end)  # explicit offsets: seek_to_end() races with the first fetch
        ready.set()
        while True:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                for message in messages:
                    event = codec.decode(message.value)
                    answered = target.answers(event)
                    if answered is not None:
                        outcomes.add(event, answered)
    finally:
        await consumer.stop()


async def end_offsets(config: Config, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(**reader(config).aiokafka(), group_id=None)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets([TopicPartition(topic, p) for p in range(config.kafka.partitions)]))
    finally:
        await consumer.stop()


async def commands_between(
    config: Config, target: Target, start: dict[TopicPartition, int], end: dict[TopicPartition, int]
) -> dict[str, tuple[int, int]]:
    """command id -> (partition, offset) of every decodable command written in the window."""
    found: dict[str, tuple[int, int]] = {}
    async for message in read_messages(reader(config), list(end)):
        tp = TopicPartition(message.topic, message.partition)
        if start[tp] <= message.offset < end[tp]:
            try:
                found.setdefault(target.command_id(codec.decode(message.value)), (message.partition, message.offset))
            except EventDecodeError:
                continue  # poison: the dead-letter topic is its outcome
    return found


@dataclass
class LoopReport:
    worker: str
    kills: int
    commands: int
    missing: dict[int, list[int]]
    decided_twice: list[str]
    broken_chains: list[str]
    uncommitted: dict[int, tuple[int, int]]  # partition -> (committed, end) where behind
    gaps_healed: int
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.missing and not self.decided_twice and not self.broken_chains and not self.uncommitted

    def line(self) -> str:
        head = (
            f"{'pass' if self.ok else 'FAIL'} kill loop {self.worker}: {self.kills} SIGKILLs, "
            f"{self.commands} commands, {sum(map(len, self.missing.values()))} without an outcome, "
            f"{len(self.decided_twice)} decided twice, {len(self.broken_chains)} wallet versions out of chain, "
            f"{self.gaps_healed} skipped offsets read back, "
            f"{len(self.uncommitted)} partitions not committed to the end, {self.seconds:.0f}s"
        )
        details = [f"    partition {p}: offsets {offsets}" for p, offsets in self.missing.items()]
        twice = [f"    decided twice: {c}" for c in self.decided_twice[:10]]
        behind = [f"    partition {p} committed {c} of {e}" for p, (c, e) in self.uncommitted.items()]
        return "\n".join([head, *details, *twice, *(f"    {b}" for b in self.broken_chains[:10]), *behind])


def missing_outcomes(commands: dict[str, tuple[int, int]], outcomes: Outcomes) -> dict[int, list[int]]:
    by_partition: dict[int, list[int]] = defaultdict(list)
    for command_id, (partition, offset) in commands.items():
        if not outcomes.by_command.get(command_id):
            by_partition[partition].append(offset)
    return {p: sorted(offsets) for p, offsets in sorted(by_partition.items())}


def gaps_in_log(supervisor: Supervisor, worker: str, since: int) -> int:
    """How many skipped offsets the worker's delivery guard read back (from its log)."""
    path = supervisor.log_file(worker)
    with open(path, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    return sum(
        int(line.split("processing the ")[1].split(" ")[0]) for line in text.splitlines() if "jumped from" in line
    )


async def kill_loop(
    config: Config,
    supervisor: Supervisor,
    worker: str,
    kills: int,
    every: int = 25,
    max_down_s: float = 4.0,
    settle_s: float = 90.0,
) -> LoopReport:
    """SIGKILL `worker` `kills` times under load, each after `every` new outcomes; audit every command."""
    target = TARGETS[worker]
    victim = process_named(config, worker)
    await ensure_running(supervisor, *processes(config))
    log_from = supervisor.log_file(worker).stat().st_size
    began = time.monotonic()
    start = await end_offsets(config, target.command_topic)
    outcomes = Outcomes()
    watching = asyncio.Event()
    watcher = asyncio.create_task(watch(config, target, outcomes, watching))
    rng = random.Random(kills)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        load = Load(config, http, ("tok_success", "tok_success", "tok_decline"))
        done = asyncio.Event()
        try:
            await watching.wait()
            await load.open_wallets(4)
            running = asyncio.create_task(load.run(done))
            for _ in range(kills):
                mark = outcomes.count
                await _until(lambda mark=mark: outcomes.count >= mark + every, 120.0, f"{every} outcomes")
                await asyncio.to_thread(supervisor.stop, victim.name, signal.SIGKILL)
                await asyncio.sleep(rng.uniform(0.0, max_down_s))
                await asyncio.to_thread(supervisor.start, victim)
            done.set()
            await running
            await ensure_running(supervisor, victim)
            end = await end_offsets(config, target.command_topic)
            commands = await commands_between(config, target, start, end)
            try:
                await _until(lambda: not missing_outcomes(commands, outcomes), settle_s, "every command's outcome")
            except TimeoutError:
                pass  # reported below, offset by offset
            behind = {tp.partition: c for tp, c in (await commits_behind(config, worker, end, 30.0)).items()}
        finally:
            done.set()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    twice = [c for c in commands if len(outcomes.by_command.get(c, ())) > 1]
    return LoopReport(
        worker,
        kills,
        len(commands),
        missing_outcomes(commands, outcomes),
        twice,
        outcomes.broken_chains(),
        behind,
        gaps_in_log(supervisor, worker, log_from),
        time.monotonic() - began,
    )


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f}s")
        await asyncio.sleep(0.05)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.kill_loop", description=__doc__)
    parser.add_argument("workers", nargs="+", choices=sorted(TARGETS))
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--every", type=int, default=25, help="outcomes between two kills")
    parser.add_argument("--max-down", type=float, default=4.0, help="longest pause between a kill and the restart")
    args = parser.parse_args(argv)
    config = load_config()
    if config.environment in ("local", "dev") or not kafka_reachable(config):
        print("run it in a test environment with Kafka up (make chaos starts it)", file=sys.stderr)
        return 2
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    supervisor = Supervisor(config)
    failed = 0
    try:
        for worker in args.workers:
            report = await kill_loop(config, supervisor, worker, args.kills, args.every, args.max_down)
            print(report.line(), flush=True)
            failed += not report.ok
    finally:
        for process in reversed(processes(config)):
            supervisor.stop(process.name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
