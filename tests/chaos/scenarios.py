"""The fault suite: a mixed load through the public APIs, one fault, then the invariants.

Each scenario opens fresh wallets, runs wallet payments, external payments, incomes and
refunds for a few seconds, injects its fault part way through (and a poison message on
two command topics), waits for the system to settle, and checks `tests.chaos.invariants`.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from connectors import topics
from connectors.auth import issue_token
from connectors.avro import SingleObjectCodec
from connectors.config import Config
from connectors.pg_roles import CONSOLE
from connectors.postgres import connect
from devtools import localinfra
from devtools.devctl import Process, Supervisor, processes, worker_peer
from domain.ids import keyed_id
from domain.payment import charge_operation_id
from streams.envelope import command_record, new_meta
from tests.chaos import invariants as inv
from tests.support import audit
from tests.support.actors import TEST_OPERATOR, payer
from tests.support.kafka import plant, reader

CURRENCY = "USD"
LOAD_SUBJECT = "chaos-load"
OPENING = 20_000


def process_named(config: Config, name: str) -> Process:
    return next(p for p in processes(config) if p.name == name)


def second_wallet_worker(config: Config) -> Process:
    return worker_peer(config, "wallet-worker", 1)


async def ensure_running(supervisor: Supervisor, *procs: Process) -> None:
    def run() -> None:
        for p in procs:
            supervisor.start(p)
        for p in procs:
            supervisor.wait_healthy(p)

    await asyncio.to_thread(run)


@dataclass
class Load:
    """The load generator: remembers every id it asked for, whether or not the API answered."""

    config: Config
    http: aiohttp.ClientSession
    tokens: tuple[str, ...]
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    wallets: list[tuple[str, str]] = field(default_factory=list)  # (wallet id, user id)
    payment_ids: set[str] = field(default_factory=set)
    external_ids: set[str] = field(default_factory=set)
    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    # (monotonic time, what) of every 5xx answer and every call that got no answer
    troubles: list[tuple[float, str]] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)  # payment ids the API answered 2xx for
    # The load acts as an admin: it opens wallets, funds them, pays and refunds for many users.
    credential: str = ""

    def __post_init__(self) -> None:
        self.credential = self.credential or issue_token(self.config.auth, LOAD_SUBJECT, ["admin"])

    async def call(self, port: int, path: str, body: dict[str, Any], key: str) -> tuple[int, Any]:
        try:
            async with self.http.post(
                f"http://127.0.0.1:{port}{path}",
                json=body,
                headers={"Idempotency-Key": key, "Authorization": f"Bearer {self.credential}"},
            ) as response:
                answer = await response.json(content_type=None)
                self.answers[f"{response.status // 100}xx"] += 1
                if response.status >= 500:
                    self.troubles.append((time.monotonic(), f"{response.status} from POST {path}"))
                return response.status, answer
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.answers["error"] += 1
            self.troubles.append((time.monotonic(), f"no answer from POST {path}: {type(exc).__name__}"))
            return 0, None

    async def raw_post(self, port: int, path: str, body: bytes, content_type: str) -> int:
        headers = {"Content-Type": content_type, "Authorization": f"Bearer {self.credential}"}
        try:
            async with self.http.post(f"http://127.0.0.1:{port}{path}", data=body, headers=headers) as response:
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return 0

    async def open_wallets(self, count: int) -> None:
        for _ in range(count):
            user = str(uuid.uuid4())
            status, body = await self.call(
                self.config.wallet_api.port, "/api/v1/wallets", {"user_id": user, "currency": CURRENCY}, user
            )
            assert status in (201, 202), f"opening a wallet answered {status}: {body}"
            if status == 202:  # accepted, not yet in the view (a slow projector after a fault)
                await self.until_shown(self.config.wallet_api.port, body["status_url"])
            self.wallets.append((body["id"], user))
            await self.income(body["id"], OPENING)
        self.sent["wallets"] += count

    async def until_shown(self, port: int, path: str, within_s: float = 30.0) -> None:
        deadline = time.monotonic() + within_s
        while True:
            async with self.http.get(
                f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {self.credential}"}
            ) as response:
                if response.status == 200:
                    return
            assert time.monotonic() < deadline, f"{path} not shown within {within_s} s"
            await asyncio.sleep(0.2)

    async def income(self, wallet_id: str, amount: int) -> None:
        body = {"type": "income", "amount": amount, "currency": CURRENCY}
        await self.call(self.config.wallet_api.port, f"/api/v1/wallet/{wallet_id}/movement", body, str(uuid.uuid4()))

    async def pay(self) -> None:
        key = str(uuid.uuid4())
        # What the API names it (the key is the load's own, first generation): known even if the call fails.
        payment_id = keyed_id("payment", LOAD_SUBJECT, key, 1)
        self.payment_ids.add(payment_id)
        amount = self.rng.randrange(500, 6_000, 100)
        if self.rng.random() < 0.5:
            wallet_id, user = self.rng.choice(self.wallets)
            self.sent["wallet_payments"] += 1
            body = {
                "user_id": user,
                "amount": amount,
                "currency": CURRENCY,
                "payment_method_type": "wallet",
                "wallet_id": wallet_id,
                "description": "chaos",
            }
        else:
            self.external_ids.add(payment_id)
            self.sent["external_payments"] += 1
            body = {
                "user_id": str(uuid.uuid4()),
                "amount": amount,
                "currency": CURRENCY,
                "payment_method_type": "external",
                "provider": self.config.provider.name,
                "token": self.rng.choice(self.tokens),
            }
        status, answer = await self.call(self.config.payment_api.port, "/api/v1/payments", body, key)
        if 200 <= status < 300:
            self.accepted.add(payment_id)
        if status == 201 and answer.get("status") == "completed" and self.rng.random() < 0.5:
            await self.refund(payment_id, None if self.rng.random() < 0.5 else amount // 2)
        if status == 201 and answer.get("status") == "completed" and payment_id not in self.external_ids:
            if self.rng.random() < 0.2:
                await self.revert_debit(payment_id)

    async def revert_debit(self, payment_id: str) -> None:
        """An operator reverting a payment's debit by hand: the wallet must refuse it (refund instead)."""
        self.sent["manual_reverts"] += 1
        path = f"/api/v1/movement/{charge_operation_id(payment_id, 'wallet')}/revert"
        body = {"reason": "chaos operator", "requested_by": "chaos"}
        await self.call(self.config.wallet_api.port, path, body, str(uuid.uuid4()))

    async def refund(self, payment_id: str, amount: int | None) -> None:
        self.sent["refunds"] += 1
        body = {} if amount is None else {"amount": amount}
        await self.call(self.config.payment_api.port, f"/api/v1/payments/{payment_id}/refund", body, str(uuid.uuid4()))

    async def run(self, done: asyncio.Event, concurrency: int = 10) -> None:
        async def loop() -> None:
            while not done.is_set():
                errors = self.answers["5xx"] + self.answers["error"]
                if self.rng.random() < 0.2:
                    self.sent["incomes"] += 1
                    await self.income(self.rng.choice(self.wallets)[0], self.rng.randrange(100, 3_000, 100))
                else:
                    await self.pay()
                if self.answers["5xx"] + self.answers["error"] > errors:
                    await asyncio.sleep(0.2)  # a service is down: keep knocking, without flooding its log

        await asyncio.gather(*(loop() for _ in range(concurrency)))

    def summary(self) -> str:
        sent = ", ".join(f"{v} {k}" for k, v in self.sent.items())
        return f"{sent} (answers {dict(sorted(self.answers.items()))})"


@dataclass
class Ctx:
    config: Config
    supervisor: Supervisor
    load: Load
    cleanup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # (source topic, key) of events the fault wrote for the projector to refuse: each must be
    # dead-lettered by a projector, and no other projector letter is expected.
    projector_poison: set[tuple[str, bytes]] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)  # what the fault itself saw go wrong


Fault = Callable[[Ctx], Awaitable[list[str]]]


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: Fault
    slow: bool = True
    tokens: tuple[str, ...] = ("tok_success", "tok_success", "tok_decline")
    simulator_env: dict[str, str] | None = None
    load_s: float = 8.0
    settle_s: float = 60.0  # the bound within which every payment must be terminal
    # After the fault heals, how long 5xx answers and unanswered calls are still expected.
    recovery_s: float = 10.0


@dataclass
class Report:
    name: str
    load: str = ""
    faults: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    violations_at_the_door: list[str] = field(default_factory=list)
    settled_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations

    def line(self) -> str:
        head = (
            f"{'pass' if self.ok else 'FAIL'} {self.name}: load {self.load}; faults: {'; '.join(self.faults)}; "
            f"invariants {len(self.checked)} checked ({', '.join(self.checked)}), settled in {self.settled_s:.1f}s"
        )
        extra = [f"    RESILIENCE GAP: {g}" for g in self.gaps] + [f"    VIOLATION: {v}" for v in self.violations]
        return "\n".join([head, *extra])


# ------------------------------------------------------------------ faults


def kill(name: str, down_s: float = 3.0) -> Fault:
    async def fault(ctx: Ctx) -> list[str]:
        await asyncio.to_thread(ctx.supervisor.stop, name, signal.SIGKILL)
        await asyncio.sleep(down_s)
        await ensure_running(ctx.supervisor, process_named(ctx.config, name))
        return [f"SIGKILL {name}, restarted after {down_s:.0f}s"]

    return fault


async def restart_broker(ctx: Ctx) -> list[str]:
    await asyncio.to_thread(localinfra.stop_kafka, ctx.config)
    await asyncio.sleep(5)
    await asyncio.to_thread(localinfra.start_kafka, ctx.config)
    return ["Kafka broker stopped, restarted after 5s"]


async def stop_postgres(ctx: Ctx) -> list[str]:
    await asyncio.to_thread(localinfra.stop_postgres, ctx.config)
    await asyncio.sleep(10)
    await asyncio.to_thread(localinfra.start_postgres, ctx.config)
    return ["PostgreSQL stopped for 10s"]


async def kill_during_rebalance(ctx: Ctx) -> list[str]:
    second = second_wallet_worker(ctx.config)
    log = ctx.supervisor.log_file(second.name)
    logged = log.stat().st_size if log.exists() else 0
    await asyncio.to_thread(ctx.supervisor.start, second)

    async def stop_second() -> None:
        await asyncio.to_thread(ctx.supervisor.stop, second.name)

    ctx.cleanup.append(stop_second)
    joining = await wait_for_line(log, logged, "Revoking previously assigned", timeout=60.0)
    # The newcomer has sent its JoinGroup: the group is rebalancing until every member rejoins.
    await asyncio.to_thread(ctx.supervisor.stop, "wallet-worker", signal.SIGKILL)
    await asyncio.sleep(3.0)
    await ensure_running(ctx.supervisor, process_named(ctx.config, "wallet-worker"), second)
    when = "mid-rebalance" if joining else "(the newcomer never logged its join: timing unknown)"
    return ["second wallet worker started", f"SIGKILL wallet-worker {when}, restarted after 3s"]


async def wait_for_line(path: Path, offset: int, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, "rb") as f:
            f.seek(offset)
            if text.encode() in f.read():
                return True
        await asyncio.sleep(0.1)
    return False


async def no_fault(ctx: Ctx) -> list[str]:
    return ["provider sends every webhook twice, final before pending"]


HOSTILE_BODIES: tuple[tuple[str, bytes, str], ...] = (
    ("a NUL in a description", b'{"description": "a\\u0000b"}', "application/json"),
    ("an integer of 5000 digits", b'{"amount": ' + b"9" * 5000 + b"}", "application/json"),
    ("JSON nested 50000 deep", b"[" * 50_000 + b"]" * 50_000, "application/json"),
    ("a lone surrogate", b'{"reason": "\\ud800"}', "application/json"),
    ("a text/plain body", b'{"type": "income"}', "text/plain"),
)


async def poison_projections(ctx: Ctx) -> list[str]:
    """Events PostgreSQL refuses, written with a raw producer as if the API had let them through:
    a movement and a wallet payment whose texts hold a NUL. The saga runs them (text is not its
    business); the projector must dead-letter what it cannot store and keep the views moving.
    Hostile bodies at the door meanwhile must all get a 4xx."""
    wallet_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
    payment_id = str(uuid.uuid4())
    opening = command_record(
        "WalletOpenRequested", new_meta(actor=TEST_OPERATOR), wallet_id=wallet_id, user_id=user_id, currency=CURRENCY,
        opening_balance=10_000,
    )  # fmt: skip
    income = command_record(
        "MovementRequired", new_meta(actor=TEST_OPERATOR), movement_id=str(uuid.uuid4()), wallet_id=wallet_id,
        type="income", amount={"amount": 500, "currency": CURRENCY}, reference="chaos\x00poison", description=None,
        reverts_movement_id=None, payment_id=None,
    )  # fmt: skip
    payment = command_record(
        "PaymentCreated", new_meta(event_id=str(uuid.uuid4()), correlation_id=payment_id, actor=payer(user_id)),
        payment_id=payment_id, user_id=user_id, amount={"amount": 700, "currency": CURRENCY}, method="wallet",
        wallet_id=wallet_id, provider=None, provider_token=None, description="chaos\x00poison", deadline_at=None,
    )  # fmt: skip
    codec = SingleObjectCodec()
    # Each as the API that writes that command topic: what a client past the API could write.
    await plant(
        ctx.config,
        [
            (topic, key.encode(), codec.encode(record))
            for topic, key, record in (
                (topics.WALLET_MOVEMENT_REQUIRED.name, wallet_id, opening),
                (topics.WALLET_MOVEMENT_REQUIRED.name, wallet_id, income),
                (topics.PAYMENT_CREATED.name, payment_id, payment),
            )
        ],
    )
    # The income's outcome and the payment's creation carry the NUL into the projector.
    ctx.projector_poison |= {
        (topics.WALLET_MOVEMENT_UPDATES.name, wallet_id.encode()),
        (topics.PAYMENT_CREATED.name, payment_id.encode()),
    }
    refused = 0
    for what, body, content_type in HOSTILE_BODIES:
        for port, path in (
            (ctx.config.payment_api.port, "/api/v1/payments"),
            (ctx.config.wallet_api.port, f"/api/v1/wallet/{ctx.load.wallets[0][0]}/movement"),
        ):
            status = await ctx.load.raw_post(port, path, body, content_type)
            if 400 <= status < 500:
                refused += 1
            else:
                ctx.violations.append(f"{what} to {path} answered {status}, not 4xx")
    return [
        f"a movement and a wallet payment with a NUL written past the API (wallet {wallet_id})",
        f"{refused} of {2 * len(HOSTILE_BODIES)} hostile bodies refused with 4xx",
    ]


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("wallet-worker-sigkill", kill("wallet-worker"), slow=False),
    Scenario(
        "webhooks-twice-out-of-order",
        no_fault,
        slow=False,
        tokens=(
            "tok_success",
            "tok_decline",
            "tok_duplicate_webhooks",
            "tok_out_of_order",
            "tok_late_success",
            # refunds declined, and refunds that succeed after their deadline (reconciled)
            "tok_refund_decline",
            "tok_refund_late",
        ),
        simulator_env={"SIMULATOR_WEBHOOKS": "twice_out_of_order"},
        recovery_s=0.0,  # no fault: not one 5xx is expected
    ),
    Scenario("payment-worker-sigkill", kill("payment-worker")),
    Scenario("projector-sigkill", kill("projector")),
    Scenario("broker-restart", restart_broker, settle_s=90.0),
    Scenario("postgres-stop", stop_postgres, settle_s=90.0),
    Scenario("wallet-worker-killed-in-rebalance", kill_during_rebalance, settle_s=90.0),
    Scenario("poison-for-the-projector", poison_projections, recovery_s=0.0),
)


# ------------------------------------------------------------------ the runner


async def dlq_end_offsets(config: Config) -> dict[int, int]:
    consumer = AIOKafkaConsumer(**reader(config).aiokafka(), group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(topics.PAYMENT_DLQ.name, p) for p in range(config.kafka.partitions)]
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(parts)).items()}
    finally:
        await consumer.stop()


async def inject_poison(config: Config, wallet_id: str) -> list[tuple[str, bytes, bytes]]:
    """Undecodable bytes on a wallet and a payment command topic: both must reach the DLQ, once each."""
    poison = [
        (topics.WALLET_MOVEMENT_REQUIRED.name, wallet_id.encode(), f"chaos poison {uuid.uuid4()}".encode()),
        (topics.PAYMENT_CREATED.name, str(uuid.uuid4()).encode(), f"chaos poison {uuid.uuid4()}".encode()),
    ]
    await plant(config, [(topic, key, value) for topic, key, value in poison])
    return poison


async def provider_objects(config: Config, http: aiohttp.ClientSession, ids: set[str]) -> dict[str, list[Any]]:
    found = {}
    for pid in ids:
        async with http.get(f"{config.provider.base_url}/v1/objects", params={"payment_id": pid}) as response:
            found[pid] = (await response.json())["data"]
    return found


async def auditor_witness(config: Config, audit_from: dict[str, int]) -> list[str]:
    """The money auditor, a second witness with its own books: nothing since the scenario began."""
    found = await audit.open_violations_since(config, audit_from)
    if isinstance(found, str):
        return [found]
    return [audit.describe(v) for v in found]


async def check(
    config: Config,
    http: aiohttp.ClientSession,
    load: Load,
    dlq_from: dict[int, int],
    expected: Expected,
    audit_from: dict[str, int],
) -> tuple[list[str], list[str]]:
    log = await inv.read_log(config, dlq_from)
    wallet_ids = [w for w, _ in load.wallets]
    external = {pid for pid in load.external_ids if pid in log.created}
    results = {
        "log: balance = applied movements, never < 0": inv.log_wallets_balanced(log),
        "log: money conserved": inv.log_money_conserved(log, wallet_ids),
        "log: payments terminal, agree with movements/operations, every refund decided and counted once": (
            inv.log_payments_settled(log, load.payment_ids)
        ),
        "provider: objects (charges and refunds) agree with payments": inv.provider_agrees(
            log, await provider_objects(config, http, external)
        ),
        "log: DLQ holds only injected poison": inv.dead_letters_only(log, expected.poison, expected.projector_poison),
        "log: every accepted payment is on the log": inv.log_accepted(log, expected.accepted),
        "log: every payment's movements (reverts too) = amount - refunded": inv.log_payment_movements_agree(
            log, load.payment_ids
        ),
        "auditor: no money violation since the scenario began": await auditor_witness(config, audit_from),
    }
    conn = await connect(config, CONSOLE)  # the checks only read
    try:
        ids = sorted(load.payment_ids)
        results["pg: balance = applied movements, never < 0"] = await inv.pg_wallets_balanced(conn, wallet_ids)
        results["pg: money conserved"] = await inv.pg_money_conserved(conn, wallet_ids)
        results["pg: payments terminal, no refund reservation outlives its outcome"] = await inv.pg_payments_settled(
            conn, ids
        )
        results[
            "pg: every payment's movements (reverts too) = amount - refunded"
        ] = await inv.pg_payment_movements_agree(conn, ids)
        results["pg: views = rebuild from log"] = await inv.views_match_log(conn, log)
        results["pg: every accepted payment is in the views"] = await inv.pg_accepted(conn, expected.accepted)
    finally:
        await conn.close()
    return list(results), [f"[{name}] {v}" for name, bad in results.items() for v in bad]


FAULT_AFTER_ANSWERS = 20


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f}s for {what}")
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Expected:
    """What a scenario injected on purpose, and what the APIs accepted."""

    poison: list[tuple[str, bytes, bytes]]  # (topic, key, value) every worker must dead-letter
    projector_poison: set[tuple[str, bytes]]  # (source topic, key) a projector must dead-letter
    accepted: set[str]  # payment ids answered 2xx: each must be on the log and in PostgreSQL


async def projector_letters_counted(config: Config) -> dict[str, int]:
    """The projector's own count of what it dead-lettered since it started (from /ready)."""
    url = f"http://127.0.0.1:{config.projector.metrics_port}/ready"
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            return dict((await response.json()).get("dead_letters", {}))
    except (aiohttp.ClientError, ValueError):
        return {}


async def projector_reported(config: Config, before: dict[str, int], poison: set[tuple[str, bytes]]) -> list[str]:
    """Readiness told the truth: ready again, and it counted the letters it wrote."""
    if not poison:
        return []
    url = f"http://127.0.0.1:{config.projector.metrics_port}/ready"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        status, body = response.status, await response.json()
    after = body.get("dead_letters", {})
    bad = [] if status == 200 else [f"projector unready after the poison: {body.get('problems')}"]
    written = sum(after.values()) - sum(before.get(name, 0) for name in after)
    if written < len(poison):
        bad.append(f"projector readiness counts {written} new dead letter(s), {len(poison)} poison event(s) written")
    return bad


async def dead_services(config: Config, supervisor: Supervisor) -> list[str]:
    return [p.name for p in processes(config) if supervisor.pid(p.name) is None]


async def run_scenario(config: Config, supervisor: Supervisor, scenario: Scenario) -> Report:
    report = Report(scenario.name)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        load = Load(config, http, scenario.tokens)
        ctx = Ctx(config, supervisor, load)
        simulator = process_named(config, "provider-simulator")
        if scenario.simulator_env:
            await asyncio.to_thread(supervisor.stop, simulator.name)
            await asyncio.to_thread(supervisor.start, simulator, scenario.simulator_env)
            await ensure_running(supervisor, simulator)

            async def normal_simulator() -> None:
                await asyncio.to_thread(supervisor.stop, simulator.name)
                await ensure_running(supervisor, simulator)

            ctx.cleanup.append(normal_simulator)
        try:
            audit_from = await audit.end_offsets(config)
            await load.open_wallets(4)
            dlq_from = await dlq_end_offsets(config)
            letters_before = await projector_letters_counted(config)
            poison = await inject_poison(config, load.wallets[0][0])
            done = asyncio.Event()
            running = asyncio.create_task(load.run(done))
            began = time.monotonic()
            # Progress, not a sleep, decides when the fault lands: mid-stream, with work in flight.
            await until(lambda: load.answers["2xx"] >= FAULT_AFTER_ANSWERS, 60.0, "the load to get going")
            fault_started = time.monotonic()
            report.faults = await scenario.fault(ctx)
            fault_ended = time.monotonic()
            # Load keeps coming for a while after the fault heals, and for load_s at least.
            await asyncio.sleep(max(3.0, scenario.load_s - (time.monotonic() - began)))
            done.set()
            await running
            stopped = time.monotonic()
            report.load = load.summary()
            report.violations_at_the_door = list(ctx.violations)
            report.violations_at_the_door += [
                f"{what} at {at - began:.1f}s, outside the fault window "
                f"({fault_started - began:.1f}s to {fault_ended - began + scenario.recovery_s:.1f}s)"
                for at, what in load.troubles
                if not fault_started <= at <= fault_ended + scenario.recovery_s
            ]
            for name in await dead_services(config, supervisor):
                report.violations_at_the_door.append(f"{name} exited during '{scenario.name}' and did not come back")
                await ensure_running(supervisor, process_named(config, name))
            report.faults.append(f"2 poison messages ({', '.join(t for t, _, _ in poison)})")
            expected = Expected(poison, ctx.projector_poison, load.accepted)
            while True:  # settle: every check passes, or the bound is reached
                try:
                    report.checked, report.violations = await check(config, http, load, dlq_from, expected, audit_from)
                    report.violations += await projector_reported(config, letters_before, ctx.projector_poison)
                except (OSError, asyncpg.PostgresError) as exc:
                    report.violations = [f"checking failed: {exc!r}"]
                report.settled_s = time.monotonic() - stopped
                if not report.violations or report.settled_s > scenario.settle_s:
                    break
                await asyncio.sleep(2.0)
            if report.violations:
                report.violations.insert(0, f"still violated {scenario.settle_s:.0f}s after the load stopped")
            report.violations = report.violations_at_the_door + report.violations
        finally:
            for undo in ctx.cleanup:
                await undo()
    return report
