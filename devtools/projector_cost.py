"""What the live projector costs: CPU seconds of its process per 1,000 messages it applied, and
the age of the newest applied event when it was applied (the views' lag), over a window.

    python -m devtools.projector_cost --seconds 30

Run it while the projector works: while payments flow at a fixed rate (its cost per payment),
or right after starting it on a backlog (its cost when batches are full). Messages are counted
from its stored offsets (projection_offsets), CPU from /proc/<pid>/stat, the lag from its
`projection_lag_seconds` gauge, read every 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import urllib.request

from connectors.config import Config, load_config
from connectors.credentials import PG_OWNER
from connectors.postgres import connect
from devtools.devctl import Supervisor

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime, fields 14 and 15


def lag_samples(config: Config) -> list[float]:
    url = f"http://127.0.0.1:{config.projector.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            text = answer.read().decode()
    except OSError:  # busy with a large batch: no sample this time
        return []
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("projection_lag_seconds{")]


async def measure(config: Config, seconds: float) -> None:
    pid = Supervisor(config).pid("projector")
    if pid is None:
        raise SystemExit("the projector is not running: `python -m devtools.devctl up`")
    conn = await connect(config, PG_OWNER)
    applied = "SELECT coalesce(sum(last_offset + 1), 0)::bigint FROM projection_offsets"
    try:
        messages_before, cpu_before, started = await conn.fetchval(applied), cpu_seconds(pid), time.monotonic()
        lags: list[float] = []
        while time.monotonic() - started < seconds:
            lags += lag_samples(config)
            await asyncio.sleep(0.1)
        messages = await conn.fetchval(applied) - messages_before
        cpu, wall = cpu_seconds(pid) - cpu_before, time.monotonic() - started
    finally:
        await conn.close()
    lags.sort()
    print(f"projector pid {pid}: {messages:,} messages in {wall:.1f} s ({messages / wall:,.0f}/s)")
    per_thousand = 1000 * cpu / max(messages, 1)
    print(f"  CPU {cpu:.2f} s = {per_thousand:.3f} s per 1,000 messages ({100 * cpu / wall:.0f}% of a core)")
    if lags:
        p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))]
        print(f"  view lag when applied: median {statistics.median(lags) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.projector_cost", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    asyncio.run(measure(load_config(), args.seconds))


if __name__ == "__main__":
    main()
