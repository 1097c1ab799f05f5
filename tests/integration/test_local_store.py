"""The wallet worker's tables live in RocksDB: a restart reads only the changelog's tail, and a
worker whose store is lost restores it from the changelog, unready until it has."""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from connectors.config import Config, state_dir
from connectors.topics import WALLET_WORKER
from devtools.devctl import Supervisor
from tests.conftest import admin_token, process_named
from tests.integration.test_payment_service import new_wallet, wallet_balance
from tests.support import Api

# faust's recovery log: one table of highwaters, one of where reading starts, rows "| topic | p | offset |".
ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*(\d+)\s*\|\s*(-?\d+)\s*\|", re.MULTILINE)


def store_dir(config: Config) -> Path:
    return state_dir(config) / "faust" / f"{WALLET_WORKER}-{config.wallet_worker.web_port}"


def restart_watching_readiness(config: Config, supervisor: Supervisor, log: Path) -> tuple[str, list[int]]:
    """Start the wallet worker; return what it logged meanwhile and every /ready/ status seen,
    polling until the first 200. Each status is recorded with whether recovery had completed."""
    offset = log.stat().st_size if log.exists() else 0
    process = process_named(config, "wallet-worker")
    supervisor.start(process)
    seen: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        recovered_before = "Recovery complete" in log.read_text(errors="replace")[offset:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{process.health_port}/ready/", timeout=2) as answer:
                status = answer.status
        except urllib.error.HTTPError as refused:
            status = refused.code
        except OSError:
            status = 0  # not listening yet
        seen.append(status)
        if status == 200:
            assert recovered_before or "Recovery complete" in log.read_text(errors="replace")[offset:]
            return log.read_text(errors="replace")[offset:], seen
        time.sleep(0.05)
    raise AssertionError(f"the wallet worker was not ready in 120 s; statuses seen: {sorted(set(seen))}")


def offsets_table(text: str) -> dict[tuple[str, int], int]:
    """Rows of one of faust's tables; a topic repeated from the row above is printed as a ditto mark."""
    rows, topic = {}, ""
    for name, partition, offset in ROW.findall(text):
        topic = topic if name == "\u3003" else name
        rows[(topic, int(partition))] = int(offset)
    return rows


def reading_starts(logged: str) -> dict[tuple[str, int], tuple[int, int]]:
    """(changelog, partition) -> (highwater, offset reading starts at), from faust's recovery log."""
    highwater_at, starts_at = logged.rfind("Highwater - Active"), logged.rfind("Reading Starts At - Active")
    assert highwater_at >= 0 and starts_at > highwater_at, "faust logged no recovery tables"
    highwaters = offsets_table(logged[highwater_at:starts_at])
    starts = offsets_table(logged[starts_at : starts_at + 4000])
    return {tp: (highwaters[tp], starts[tp]) for tp in highwaters if tp in starts}


async def state_page_balance(config: Config, wallet_id: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{config.wallet_worker.web_port}/wallets/{wallet_id}/",
        headers={"Authorization": f"Bearer {admin_token(config)}"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return int(json.loads(answer.read())["balance"])


async def test_a_killed_worker_reads_only_the_tail_and_a_lost_store_is_restored_while_unready(
    wallet_api: Api, config: Config, supervisor: Supervisor
) -> None:
    if not config.wallet_worker.store.startswith("rocksdb"):
        pytest.skip("this environment keeps the wallet worker's tables in memory")
    wallet_id, _ = await new_wallet(wallet_api, 7_000)
    assert await state_page_balance(config, wallet_id) == 7_000
    log = supervisor.log_file("wallet-worker")

    supervisor.stop("wallet-worker", signal.SIGKILL)
    logged, _ = restart_watching_readiness(config, supervisor, log)
    tail = reading_starts(logged)
    assert tail and all(start >= highwater - 50 for highwater, start in tail.values()), (
        f"a restart with its store should read only the changelog's tail, read from {tail}"
    )
    assert await state_page_balance(config, wallet_id) == 7_000

    supervisor.stop("wallet-worker", signal.SIGKILL)
    shutil.rmtree(store_dir(config))
    logged, statuses = restart_watching_readiness(config, supervisor, log)
    restored = reading_starts(logged)
    assert any(start <= 0 < highwater for highwater, start in restored.values()), (
        f"a lost store must be restored from the changelog's beginning, read from {restored}"
    )
    assert 200 not in statuses[:-1]
    assert await state_page_balance(config, wallet_id) == 7_000
    await wallet_balance(wallet_api, wallet_id, 7_000)
