"""`make reset && make run` gives a working system with the sample wallets, every time: an
environment of its own (every port shifted) is reset to an empty broker and database, brought
up by the same command `make run` uses, and asked for the sample wallets.

On a fresh broker a worker used to start consuming before its table's changelog topic was in
its metadata; every opening command then failed and was dead-lettered as if it were at fault,
and the sample wallets never existed while every /ready said ready."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import TopicPartition

from connectors.auth import issue_token
from connectors.config import CONFIG_DIR, Config, load_config
from connectors.log_reader import read_messages
from connectors.topics import PAYMENT_DLQ
from devtools.localinfra import ROOT
from devtools.sample_data import SAMPLE_WALLETS
from tests.support.kafka import reader

FRESH = "scratch-fresh"
PORT_SHIFT = 700


def shifted(raw: Any, by: int) -> Any:
    """The test environment's configuration with every port moved by `by`."""
    if isinstance(raw, dict):
        return {k: v + by if k in {"port", "controller_port", "web_port", "metrics_port"} else shifted(v, by)
                for k, v in raw.items()}  # fmt: skip
    if isinstance(raw, str):
        return re.sub(r":(\d{4,5})\b", lambda m: f":{int(m.group(1)) + by}", raw)
    return raw


def run(*args: str) -> str:
    env = {**os.environ, "ENVIRONMENT": FRESH}
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def fresh(config: Config) -> Iterator[Config]:
    path = CONFIG_DIR / f"{FRESH}.json"
    path.write_text(
        json.dumps(shifted(json.loads((CONFIG_DIR / f"{config.environment}.json").read_text()), PORT_SHIFT))
    )
    try:
        run("devtools.localinfra", "reset")
        yield load_config(FRESH)
    finally:
        subprocess.run([sys.executable, "-m", "devtools.devctl", "down"], cwd=ROOT,
                       env={**os.environ, "ENVIRONMENT": FRESH}, capture_output=True, timeout=300)  # fmt: skip
        subprocess.run([sys.executable, "-m", "devtools.localinfra", "reset"], cwd=ROOT,
                       env={**os.environ, "ENVIRONMENT": FRESH}, capture_output=True, timeout=300)  # fmt: skip
        Path(path).unlink(missing_ok=True)


async def test_a_system_started_on_an_empty_broker_has_the_sample_wallets(fresh: Config) -> None:
    out = run("devtools.devctl", "up")
    assert "topics: " in out and "sample wallets: 3 opening command(s) produced" in out, out
    token = issue_token(fresh.auth, "fresh-admin", ["admin"])
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for wallet_id, user_id, balance, currency in SAMPLE_WALLETS:
            url = f"http://127.0.0.1:{fresh.wallet_api.port}/api/v1/wallet/{wallet_id}"
            wallet = await _eventually_found(http, url)
            assert (wallet["user_id"], wallet["balance"], wallet["currency"]) == (user_id, balance, currency)
    letters = [m async for m in read_messages(reader(fresh), _dlq(fresh))]
    assert letters == [], "a fresh start dead-lettered good commands"


async def _eventually_found(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    import asyncio
    import time

    deadline = time.monotonic() + 30
    while True:
        async with http.get(url) as response:
            if response.status == 200:
                return dict(await response.json())
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} answered {response.status}: {await response.text()}")
        await asyncio.sleep(0.2)


def _dlq(config: Config) -> list[TopicPartition]:
    return [TopicPartition(PAYMENT_DLQ.name, p) for p in range(config.kafka.partitions)]
