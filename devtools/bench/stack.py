"""Our stack under load: wallets made for the run, payments driven through the REST API and
timed to their terminal event on the log."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import asdict, dataclass

import aiohttp
import asyncpg

from connectors.auth import issue_token
from connectors.avro import EventDecodeError, make_codec
from connectors.config import Config
from connectors.credentials import CONSOLE
from connectors.kafka_security import kafka_access
from connectors.pg_roles import CONSOLE as CONSOLE_ROLE
from connectors.postgres import create_pool
from connectors.topics import PAYMENT_FAILED, PAYMENT_SUCCEEDED
from devtools import localinfra
from devtools.bench.measure import COLD_BALANCE, FAIL_AMOUNT, HOT_BALANCE, Step, Tail, open_loop, say

# ---------------------------------------------------------------- our stack


@dataclass
class Wallet:
    id: str
    user_id: str
    hot: bool


async def prepare_wallets(config: Config, hot: int, cold: int) -> list[Wallet]:
    """Reuse the wallets of an earlier run while they still hold money; otherwise open new ones."""
    saved = localinfra.state_dir(config) / "bench-wallets.json"
    pool = await create_pool(config, CONSOLE_ROLE, max_size=2)  # it only reads the views
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
        self.tail = Tail(kafka_access(config, CONSOLE), [PAYMENT_SUCCEEDED.name, PAYMENT_FAILED.name], self.on_event)
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
        """Poll the view for payments whose terminal event arrived; 50 ms resolution (a finer poll
        is load on the PostgreSQL the benchmark measures)."""
        while not stop.is_set():
            waiting = [pid for _, pid, _ in self.terminal.values() if pid not in self.in_pg]
            if waiting:
                rows = await pool.fetch(
                    "SELECT id::text FROM payments WHERE id = ANY($1::uuid[]) AND status_rank >= 2", waiting
                )
                now = time.time()
                for row in rows:
                    self.in_pg[row["id"]] = now
            await asyncio.sleep(0.05)

    async def run(self, rate: float, duration: float) -> Step:
        step = Step("ours", rate, duration)
        mine: list[tuple[str, int]] = []
        refused: set[tuple[str, int]] = set()
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
                        status = response.status
                except aiohttp.ClientError:
                    status = 0
                answered_ms = (time.time() - scheduled) * 1000
                if status in (429, 503):  # refused at capacity: it never enters the system
                    step.shed += 1
                    step.shed_ms.append(answered_ms)
                    refused.add(key)
                    return
                step.http_ms.append(answered_ms)
                step.accepted += status == 201
                step.http_errors += status != 201

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
            while time.monotonic() < drain_until and (
                tasks or not all(k in self.terminal for k in mine if k not in refused)
            ):
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
        admitted = [k for k in mine if k not in refused]
        if admitted and all(k in self.terminal for k in admitted):
            step.drained_s = max(0.0, max(self.terminal[k][0] for k in admitted) - (start + duration))
        return step
