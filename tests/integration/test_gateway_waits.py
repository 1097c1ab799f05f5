"""Long-polls through the gateway: one caller parks as many as it may and is refused beyond,
while another caller's ordinary requests keep answering at once; a caller that hangs up
gives its wait back."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from connectors.config import Config
from services.gateway import WAITS, create_app
from tests.conftest import ensure_running
from tests.integration.test_auth_gateway import raw_get, token
from tests.support import Api, eventually, free_port

PARKED = re.compile(r"^gateway_parked_long_polls ([0-9.]+)$", re.MULTILINE)


@contextlib.asynccontextmanager
async def gateway_beside(config: Config, http: aiohttp.ClientSession, **changes: Any) -> AsyncIterator[Api]:
    """A gateway of our own in front of the running APIs, with `changes` to its settings."""
    settings = dataclasses.replace(config.gateway, port=free_port(), **changes)
    app = create_app(dataclasses.replace(config, gateway=settings))
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.port).start()
    try:
        yield Api(http, f"http://127.0.0.1:{settings.port}")
    finally:
        await runner.cleanup()
    assert app[WAITS].parked == 0


async def test_parked_long_polls_of_one_user_leave_everyone_elses_requests_fast(
    payment_system: Config, http: aiohttp.ClientSession
) -> None:
    # Two ordinary connections per API: were long-polls on the same pool, ten parked waits
    # would queue every other request behind them for the whole wait.
    allowed = 10
    async with gateway_beside(payment_system, http, upstream_connections=2, max_waits_per_credential=allowed) as api:
        parker = api.as_(token(payment_system, f"parker-{uuid.uuid4()}", "user"))
        bystander = api.as_(token(payment_system, f"bystander-{uuid.uuid4()}", "user"))

        def wait_on_nothing() -> str:
            return f"/api/v1/payments/{uuid.uuid4()}?wait=10"  # no such payment: the API waits it out

        parked = [asyncio.create_task(parker.get(wait_on_nothing())) for _ in range(allowed)]

        async def all_parked() -> bool:
            _, body = await api.get("/metrics")
            found = PARKED.search(body)
            return found is not None and float(found.group(1)) == allowed

        await eventually(all_parked, timeout=5, what=f"{allowed} parked long-polls")
        for _ in range(3):
            async with http.get(
                api.base_url + wait_on_nothing(), headers={"Authorization": f"Bearer {parker.token}"}
            ) as response:
                body = await response.json()
                assert (response.status, body["error"]["code"], body["error"]["field"]) == (
                    429,
                    "too_many_waits",
                    "wait",
                )
                assert int(response.headers["Retry-After"]) >= 1
        latencies = []
        for _ in range(30):
            started = time.perf_counter()
            status, body = await bystander.get(f"/api/v1/payments/{uuid.uuid4()}")
            latencies.append(time.perf_counter() - started)
            assert (status, body["error"]["code"]) == (404, "payment_not_found"), body
        assert max(latencies) < 0.2, sorted(latencies)[-5:]  # the p99 of 30 is their slowest
        assert not any(task.done() for task in parked)  # the waits were parked all along
        for task in parked:
            task.cancel()
        await asyncio.gather(*parked, return_exceptions=True)


async def parked_in(gateway: Api) -> float:
    async with gateway.session.get(gateway.base_url + "/metrics") as response:
        found = PARKED.search(await response.text())
    return float(found.group(1)) if found else 0.0


async def test_a_caller_that_hangs_up_gives_its_parked_wait_back(
    payment_system: Config, supervisor: Any, http: aiohttp.ClientSession
) -> None:
    ensure_running(payment_system, supervisor, "gateway")
    gateway = Api(http, f"http://127.0.0.1:{payment_system.gateway.port}")
    waiter = gateway.as_(token(payment_system, f"hangs-up-{uuid.uuid4()}", "user"))
    before = await parked_in(gateway)
    waiting = asyncio.create_task(waiter.get(f"/api/v1/payments/{uuid.uuid4()}?wait=25"))
    await eventually(lambda: _more(gateway, before), timeout=5, what="the wait parked")
    waiting.cancel()  # closes the connection mid-request
    with pytest.raises(asyncio.CancelledError):
        await waiting
    started = time.monotonic()
    await eventually(lambda: _back_to(gateway, before), timeout=5, what="the wait given back")
    assert time.monotonic() - started < 5  # long before the 25 s it asked for


async def _more(gateway: Api, than: float) -> bool:
    return await parked_in(gateway) > than


async def _back_to(gateway: Api, level: float) -> bool:
    return await parked_in(gateway) <= level


async def test_the_gateway_is_ready_only_with_both_apis_and_counts_what_it_refuses(
    payment_system: Config, http: aiohttp.ClientSession
) -> None:
    async with gateway_beside(payment_system, http) as api:
        assert await api.get("/ready") == (200, {"status": "ready", "problems": {}})
        port = int(api.base_url.rsplit(":", 1)[1])
        assert (await raw_get(port, "/api/v1/webhooks/%2e%2e/%2e%2e/metrics", []))[0] == 400
        _, metrics = await api.get("/metrics")
        assert re.search(r'^gateway_refusals_total\{reason="invalid_path"\} [1-9]', metrics, re.MULTILINE)
        assert 'route="unrouted",service="gateway",status="400"' in metrics
    nowhere = f"http://127.0.0.1:{free_port()}"
    async with gateway_beside(payment_system, http, wallet_upstream=nowhere) as api:
        status, body = await api.get("/ready")
        assert (status, body["status"], list(body["problems"])) == (503, "unready", ["wallet_api"]), body
