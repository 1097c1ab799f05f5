"""One test per fault scenario (tests/chaos/scenarios.py); the slow ones run with `make chaos`."""

from __future__ import annotations

import pytest

from connectors.config import Config
from devtools.devctl import Supervisor, processes
from tests.chaos.scenarios import SCENARIOS, ensure_running, run_scenario


@pytest.mark.parametrize(
    "scenario",
    [pytest.param(s, id=s.name, marks=[pytest.mark.slow] if s.slow else []) for s in SCENARIOS],
)
async def test_scenario(scenario, chaos_system: tuple[Config, Supervisor]) -> None:
    config, supervisor = chaos_system
    await ensure_running(supervisor, *processes(config))  # an earlier scenario may have left one down
    report = await run_scenario(config, supervisor, scenario)
    print(report.line())
    assert report.ok, report.line()
