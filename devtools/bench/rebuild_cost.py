"""What `payments rebuild` costs: its rate, and the CPU it takes per message in its own process
and in PostgreSQL (every process of this environment's cluster, which nothing else should be
using: stop the projector first). On a shared machine the wall-clock rate says little; the CPU
per message says what free cores would give.

    ENVIRONMENT=scratch-x python -m devtools.bench.rebuild_cost [--root DIR] [-- extra rebuild args]

`--root` runs the console of another checkout (e.g. an older commit unpacked with git archive)
with this environment's config and credentials, to compare before and after.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from connectors.config import load_config
from devtools.local_postgres import pg_data_dir

ROOT = Path(__file__).resolve().parents[2]
TICKS = os.sysconf("SC_CLK_TCK")
RESULT = re.compile(r"rebuilt from ([\d,]+) messages|(\d[\d,]*) messages of .* applied in")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cluster_cpu_seconds(postmaster: int) -> float:
    """The postmaster's CPU, its exited children's (cutime, cstime) and its live children's."""
    fields = _stat(postmaster)
    total = sum(int(f) for f in fields[11:15])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                child = _stat(int(entry.name))
            except OSError:
                continue
            if int(child[1]) == postmaster:
                total += int(child[11]) + int(child[12])
    return total / TICKS


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.bench.rebuild_cost", description=__doc__)
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    config = load_config()
    postmaster = int((pg_data_dir(config) / "data" / "postmaster.pid").read_text().split()[0])
    env = {**os.environ, "PYTHONPATH": str(args.root)}
    before_pg, before_self = cluster_cpu_seconds(postmaster), resource.getrusage(resource.RUSAGE_CHILDREN)
    started, load = time.monotonic(), os.getloadavg()[0]
    run = subprocess.run(
        [sys.executable, "-m", "console", "rebuild", *args.extra],
        cwd=args.root,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - started
    after_self = resource.getrusage(resource.RUSAGE_CHILDREN)
    pg = cluster_cpu_seconds(postmaster) - before_pg
    console = after_self.ru_utime + after_self.ru_stime - before_self.ru_utime - before_self.ru_stime
    lines = [line for line in run.stdout.splitlines() if "s left" not in line]
    print("\n".join(lines[-12:]), run.stderr[-2000:], sep="\n")
    found = [m for line in lines for m in RESULT.findall(line)]
    totals = [int(a.replace(",", "")) for a, _ in found if a]
    messages = totals[-1] if totals else sum(int(b.replace(",", "")) for _, b in found if b)
    console_us, pg_us = (1e6 * cpu / max(messages, 1) for cpu in (console, pg))
    print(
        f"== {messages:,} messages, {wall:.1f} s in all (load average {load:.1f} at the start); CPU per message "
        f"(with the comparison): console {console_us:.1f} µs, PostgreSQL {pg_us:.1f} µs, "
        f"{console_us + pg_us:.1f} µs in all (the broker's not counted)"
    )
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
