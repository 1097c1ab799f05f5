"""What a restart costs, and what every process holds, in one environment (ENVIRONMENT).

    python -m devtools.restart_cost restart wallet-worker   # SIGKILL it, start it, time to ready
    python -m devtools.restart_cost rss                     # resident memory of every service

Measure with a large history on the log (`python -m devtools.history load ...`), not an empty
broker: see docs/benchmark.md, "Cost with history".
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import urllib.error
import urllib.request

from connectors.config import load_config
from devtools.devctl import Process, Supervisor, processes


def rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) // 1024


def ready(process: Process) -> bool:
    url = f"http://127.0.0.1:{process.health_port}{process.health_path}"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def restart(supervisor: Supervisor, process: Process, timeout_s: float = 900.0) -> tuple[float, int]:
    """Seconds from a start after SIGKILL to the first 200 of its readiness page, and its RSS then."""
    supervisor.stop(process.name, signal.SIGKILL)
    started = time.monotonic()
    supervisor.start(process)
    while not ready(process):
        if supervisor.pid(process.name) is None:
            raise SystemExit(f"{process.name} exited; see {supervisor.log_file(process.name)}")
        if time.monotonic() - started > timeout_s:
            raise SystemExit(f"{process.name} not ready after {timeout_s:.0f} s")
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    pid = supervisor.pid(process.name)
    return elapsed, rss_mib(pid) if pid else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.restart_cost", description=__doc__)
    parser.add_argument("command", choices=["restart", "rss"])
    parser.add_argument("name", nargs="?", help="the process to restart (restart only)")
    args = parser.parse_args(argv)
    config = load_config()
    supervisor = Supervisor(config)
    by_name = {p.name: p for p in processes(config)}
    if args.command == "restart":
        if args.name not in by_name:
            parser.error(f"name one of: {', '.join(by_name)}")
        elapsed, rss = restart(supervisor, by_name[args.name])
        print(f"{args.name}: ready {elapsed:.1f} s after a SIGKILL and a start; RSS {rss} MiB")
        return 0
    for name in by_name:
        pid = supervisor.pid(name)
        print(f"{name:<20} {'down' if pid is None else f'{rss_mib(pid):>6} MiB'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
