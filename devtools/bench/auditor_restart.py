"""The money auditor's restart cost: start it, time until it has read the log up to the end it
had when it started (and until /ready answers 200), and its resident memory then; stop it with
SIGTERM and time its final checkpoint. Run with no auditor of this environment running.

    ENVIRONMENT=scratch-x python -m devtools.bench.auditor_restart [--root DIR] [-- extra auditor args]

`--root` runs the auditor of another checkout (e.g. an older commit unpacked with git archive)
with this environment's config and credentials, to compare before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from connectors.config import load_config, state_dir
from tests.support.audit import end_offsets

ROOT = Path(__file__).resolve().parents[2]


def _get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def memory_kib(pid: int) -> dict[str, int]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args(argv)
    config = load_config()
    port = config.auditor.port
    if _get(port, "/health")[0]:
        print(f"an auditor already answers on {port}: stop it first", file=sys.stderr)
        return 2
    target = asyncio.run(end_offsets(config))
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(args.root)}
    log_file = state_dir(config) / "log" / "auditor-restart-bench.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "services.auditor", *args.extra],
            cwd=args.root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ready_s = caught_up_s = None
    figures: dict[str, Any] = {"messages": sum(target.values())}
    try:
        while time.monotonic() - started < args.timeout and child.poll() is None:
            _, status = _get(port, "/status")
            if status is not None and caught_up_s is None:
                behind = sum(max(0, end - status["positions"].get(tp, 0)) for tp, end in target.items())
                if behind == 0:
                    caught_up_s = time.monotonic() - started
                    figures.update(memory_kib(child.pid), status=status)
            if ready_s is None and _get(port, "/ready")[0] == 200:
                ready_s = time.monotonic() - started
            if caught_up_s is not None and ready_s is not None:
                break
            time.sleep(0.2)
    finally:
        stopping = time.monotonic()
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=120)
        figures["stop_s"] = round(time.monotonic() - stopping, 2)
    figures.update(
        caught_up_s=None if caught_up_s is None else round(caught_up_s, 2),
        ready_s=None if ready_s is None else round(ready_s, 2),
    )
    status = figures.pop("status", {})
    figures["started_from"] = status.get("started_from")
    figures["checkpoint"] = status.get("checkpoint")
    figures["in_memory"] = status.get("in_memory")
    figures["log"] = str(log_file)
    print(json.dumps(figures, indent=2, default=str))
    return 0 if caught_up_s is not None else 1


if __name__ == "__main__":
    sys.exit(main())
