"""One health answer: `payments health` and the gateway's GET /api/v1/system/health ask the same
checks of the running system, and both go red, naming it, when a worker stops."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from connectors.auth import issue_token
from connectors.config import Config
from devtools.devctl import Supervisor, processes
from services.system_health import readiness_pages, worker_groups
from tests.conftest import ensure_running
from tests.integration.test_console import payments
from tests.support import Api, eventually

HEALTH = "/api/v1/system/health"


@pytest.fixture(scope="module")
def everything(payment_system: Config, supervisor: Supervisor) -> Config:
    ensure_running(payment_system, supervisor, *(p.name for p in processes(payment_system)))
    return payment_system


@pytest.fixture(scope="module")
def gateway(everything: Config, http: aiohttp.ClientSession) -> Api:
    return Api(http, f"http://127.0.0.1:{everything.gateway.port}")


def operator(config: Config) -> str:
    return issue_token(config.auth, "test-operator", ["operator"])


async def console_health() -> tuple[int, dict[str, Any]]:
    code, out, err = await payments("health", "--json", timeout=60)
    assert code in (0, 1), err
    return code, json.loads(out)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["check"]: check for check in report["checks"]}


def expected_checks(config: Config) -> set[str]:
    return {
        *(f"ready: {name}" for name in readiness_pages(config)),
        *(f"lag: {group}" for group in worker_groups()),
        "dead letters",
        "last saga completion",
        "oldest unprojected event",
        "money violations",
    }


def services_fine(report: dict[str, Any]) -> bool:
    """Every service ready and every group consumed in (what a started system owes; the other
    checks depend on what earlier tests left on the log)."""
    return all(c["state"] == "ok" for name, c in by_name(report).items() if name.startswith(("ready: ", "lag: ")))


async def test_the_console_and_the_route_give_one_answer(everything: Config, gateway: Api) -> None:
    async def settled() -> tuple[int, dict[str, Any]] | None:
        code, report = await console_health()
        return (code, report) if services_fine(report) else None

    # A worker restarted by an earlier test may still be taking its partitions back.
    code, report = await eventually(settled, timeout=60, interval=2, what="every service ready")
    status, answered = await gateway.as_(operator(everything)).get(HEALTH)
    assert services_fine(answered), answered
    for one in (report, answered):
        assert set(by_name(one)) == expected_checks(everything)
        assert one["status"] == ("healthy" if not one["failing"] else "unhealthy")
        assert one["failing"] == [c["check"] for c in one["checks"] if c["state"] == "fail"]
    assert code == (0 if report["status"] == "healthy" else 1)
    assert status == (200 if answered["status"] == "healthy" else 503)


async def test_a_stopped_worker_turns_both_red_and_is_named(
    everything: Config, supervisor: Supervisor, gateway: Api
) -> None:
    supervisor.stop("wallet-worker")
    try:
        code, report = await console_health()
        assert code == 1
        assert by_name(report)["ready: wallet-worker"]["state"] == "fail"
        assert "ready: wallet-worker" in report["failing"]
        status, answered = await gateway.as_(operator(everything)).get(HEALTH)
        assert status == 503 and answered["status"] == "unhealthy"
        assert "ready: wallet-worker" in answered["failing"]

        async def group_left() -> dict[str, Any] | None:
            check = by_name((await console_health())[1])["lag: wallet-worker"]
            return check if check["state"] == "fail" else None

        left = await eventually(group_left, timeout=60, interval=2, what="the wallet worker's group without members")
        assert "0 member(s)" in left["detail"]
    finally:
        ensure_running(everything, supervisor, "wallet-worker")

    async def recovered() -> dict[str, Any] | None:
        report = (await console_health())[1]
        return report if by_name(report)["ready: wallet-worker"]["state"] == "ok" else None

    report = await eventually(recovered, timeout=60, interval=1, what="the wallet worker ready again")
    assert "ready: wallet-worker" not in report["failing"]


async def test_the_route_is_for_operators_and_admins_only_and_never_cached(everything: Config, gateway: Api) -> None:
    user = gateway.as_(issue_token(everything.auth, "550e8400-e29b-41d4-a716-446655440010", ["user"]))
    status, body = await user.get(HEALTH)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await gateway.get(HEALTH)
    assert (status, body["error"]["code"]) == (401, "unauthenticated")
    admin = issue_token(everything.auth, "test-admin", ["admin"])
    async with gateway.session.get(gateway.base_url + HEALTH, headers={"Authorization": f"Bearer {admin}"}) as answer:
        assert answer.status in (200, 503)
        assert answer.headers["Cache-Control"] == "no-store"
        assert (await answer.json())["checks"]
