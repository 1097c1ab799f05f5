"""The kill loop at the size CI affords (`make chaos` runs it with 20 kills per worker)."""

from __future__ import annotations

import pytest

from connectors.config import Config
from devtools.devctl import Supervisor
from tests.chaos.kill_loop import kill_loop

KILLS = 5


@pytest.mark.parametrize("worker", ["wallet-worker", "payment-worker"])
async def test_every_command_gets_one_outcome_across_kills(
    worker: str, chaos_system: tuple[Config, Supervisor]
) -> None:
    config, supervisor = chaos_system
    report = await kill_loop(config, supervisor, worker, KILLS, every=5)
    print(report.line())
    assert report.ok, report.line()
