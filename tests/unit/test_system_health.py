"""The health answer's verdict and wording, without servers: a warning is not an outage, every
failing check is named, and an unready page's reason is said in its own words."""

from __future__ import annotations

from services.system_health import FAIL, OK, WARN, Check, Health, unready_reason


def test_a_warning_keeps_the_system_healthy_and_a_failure_names_itself() -> None:
    calm = Health([Check("ready: gateway", OK, "ready"), Check("dead letters", WARN, "2 in the last 24 h", 2)], 0)
    assert calm.healthy and calm.json()["status"] == "healthy" and calm.json()["failing"] == []
    red = Health([*calm.checks, Check("ready: wallet-worker", FAIL, "not answering")], 0)
    assert not red.healthy
    assert red.json()["failing"] == ["ready: wallet-worker"]
    table = red.table().splitlines()
    assert table[0].split() == ["check", "state", "detail"]
    assert any(line.startswith("ready: wallet-worker") and " fail " in line for line in table)
    assert table[-1].startswith("system UNHEALTHY: ready: wallet-worker")


def test_an_unready_page_is_explained_by_what_it_says_is_wrong() -> None:
    api = {"status": "unready", "problems": {"postgres": "connection refused"}}
    assert unready_reason(api) == "postgres: connection refused"
    worker = {
        "status": "unready",
        "rebalancing": False,
        "tables_recovered": False,
        "assigned": True,
        "paused_partitions": {},
        "stalled_partitions": {"wallet.movement_required/0": 3},
    }
    assert unready_reason(worker) == "tables_recovered=False, stalled_partitions={'wallet.movement_required/0': 3}"
    assert unready_reason("<html>") == "no reason given"
