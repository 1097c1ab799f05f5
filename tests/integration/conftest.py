"""Integration fixtures: the money auditor watches the whole suite as a second witness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from connectors.config import Config
from devtools.devctl import Supervisor, processes
from tests.conftest import ensure_running
from tests.support.audit import describe, end_offsets, open_violations_since


@dataclass
class MoneyWitness:
    """Where the log stood when the suite began, and what the suite wrote wrong on purpose
    (the subjects the auditor should accuse)."""

    started_at: dict[str, int]
    planted: set[str] = field(default_factory=set)


async def settled_violations(config: Config, since: dict[str, int], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = await open_violations_since(config, since)
        if not isinstance(found, str):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{found} after {timeout:.0f}s")
        await asyncio.sleep(0.5)


@pytest.fixture(scope="session", autouse=True)
def money_witness(config: Config, supervisor: Supervisor) -> Iterator[MoneyWitness]:
    """After the whole suite: the auditor found no violation but the ones planted on purpose."""
    ensure_running(config, supervisor, "auditor")
    witness = MoneyWitness(asyncio.run(end_offsets(config)))
    yield witness
    ensure_running(config, supervisor, "auditor")
    found = asyncio.run(settled_violations(config, witness.started_at, config.auditor.grace_s + 30))
    unexpected = [describe(v) for v in found if v["subject"] not in witness.planted]
    assert not unexpected, f"the money auditor found {len(unexpected)} violation(s) in this run: {unexpected[:5]}"


@pytest.fixture(autouse=True)
def services_restored(config: Config, supervisor: Supervisor) -> Iterator[None]:
    """A test that kills a service and then fails before restarting it must not fail every test
    after it: whatever ran before the test runs again after it."""
    running = [p.name for p in processes(config) if supervisor.pid(p.name)]
    yield
    dead = [name for name in running if not supervisor.pid(name)]
    if dead:
        ensure_running(config, supervisor, *dead)
