"""Measure whether one caller's parked long-polls starve everyone else at the gateway.

It starts a gateway of its own (on a free port, limits raised for the measurement through
environment overrides) in front of the running APIs of ENVIRONMENT, parks --waits long-polls
(`GET /api/v1/payments/{id}?wait=N`) as one user, then times --requests ordinary reads of
another user through the gateway and, for reference, straight to the payment API.

    ENVIRONMENT=test python -m devtools.gateway_starvation --waits 300 --requests 200

The APIs must be running (`python -m devtools.devctl up`). Without --payment the waits name
a payment that does not exist, which the API waits out exactly like one that stays
processing (tok_no_answer), whatever the environment's provider deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter

import aiohttp

from connectors.auth import issue_token
from connectors.config import Config, load_config
from devtools.localinfra import ROOT
from tests.support import free_port

PARKED = re.compile(r"^gateway_parked_long_polls ([0-9.]+)$", re.MULTILINE)


def start_gateway(port: int, waits: int, requests: int) -> subprocess.Popen[bytes]:
    allowance = str(waits + requests + 100)  # the measurement, not the rate limit, is the subject
    overrides = {
        "GATEWAY_PORT": str(port),
        "GATEWAY_MAX_WAITS_PER_CREDENTIAL": str(waits),
        "GATEWAY_MAX_WAITS": str(waits),
        "GATEWAY_BURST": allowance,
        "GATEWAY_RATE_PER_S": allowance,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.gateway"],
        cwd=ROOT,
        env={**os.environ, **overrides},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def until(session: aiohttp.ClientSession, url: str, ok: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(url) as response:
                if re.search(ok, await response.text()):
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"{url} did not show {ok!r} within {timeout:.0f}s")


async def timed_reads(session: aiohttp.ClientSession, base: str, bearer: str, count: int) -> dict[str, object]:
    latencies, statuses = [], Counter[int]()
    for _ in range(count):
        started = time.perf_counter()
        async with session.get(f"{base}/api/v1/payments/{uuid.uuid4()}", headers={"Authorization": bearer}) as r:
            await r.read()
            statuses[r.status] += 1
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    rank = max(0, round(0.99 * len(latencies)) - 1)
    return {
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "p99_ms": round(latencies[rank] * 1000, 1),
        "max_ms": round(latencies[-1] * 1000, 1),
        "statuses": dict(statuses),
    }


async def measure(config: Config, waits: int, requests: int, wait_s: int, payment: str | None) -> dict[str, object]:
    port = free_port()
    gateway = start_gateway(port, waits, requests)
    base = f"http://127.0.0.1:{port}"
    parker = "Bearer " + issue_token(config.auth, f"parker-{uuid.uuid4()}", ["admin"])
    bystander = "Bearer " + issue_token(config.auth, f"bystander-{uuid.uuid4()}", ["admin"])
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await until(session, base + "/health", "ok", 30)

            async def park() -> int:
                target = payment or str(uuid.uuid4())
                url = f"{base}/api/v1/payments/{target}?wait={wait_s}"
                async with session.get(url, headers={"Authorization": parker}) as response:
                    await response.read()
                    return response.status

            parked = [asyncio.create_task(park()) for _ in range(waits)]
            started = time.monotonic()
            await until(session, base + "/metrics", rf"gateway_parked_long_polls {waits}\.0", 30)
            parked_after_s = time.monotonic() - started
            beyond = await park()  # one more than the raised limit
            through = await timed_reads(session, base, bystander, requests)
            direct = await timed_reads(session, f"http://127.0.0.1:{config.payment_api.port}", bystander, requests)
            still_parked = sum(not task.done() for task in parked)
            for task in parked:
                task.cancel()
            await asyncio.gather(*parked, return_exceptions=True)
    finally:
        gateway.terminate()
        gateway.wait(timeout=15)
    return {
        "parked_long_polls": waits,
        "parked_within_s": round(parked_after_s, 2),
        "still_parked_after_reads": still_parked,
        "one_more_wait_status": beyond,
        "other_user_through_gateway": through,
        "other_user_direct_to_payment_api": direct,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.gateway_starvation", description=__doc__)
    parser.add_argument("--waits", type=int, default=300, help="long-polls one user parks")
    parser.add_argument("--requests", type=int, default=200, help="ordinary reads another user times")
    parser.add_argument("--wait-s", type=int, default=25, help="the ?wait= of each long-poll")
    parser.add_argument("--payment", help="wait on this payment (one that stays processing)")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(load_config(), args.waits, args.requests, args.wait_s, args.payment))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
