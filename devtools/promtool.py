"""promtool, the checker of the alert rules and the scrape configuration (ops/prometheus/).

Debian's `prometheus` package ships it. Installing the package must not leave a Prometheus
server running on a developer's machine, so the install runs under a policy-rc.d that
forbids starting services (the Debian mechanism every maintainer script honours), unless
the machine already has one. Recommends are skipped: they add the node exporter, a daemon.

    python -m devtools.promtool install      # prints where promtool is, installing it if missing
    python -m devtools.promtool test         # check and unit-test the rules, check the config
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "ops" / "prometheus"
POLICY_RC = Path("/usr/sbin/policy-rc.d")
NO_SERVICE_STARTS = "#!/bin/sh\n# written by devtools/promtool.py for the length of one apt-get install\nexit 101\n"


class PromtoolMissing(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"[promtool] {message}", flush=True)


def found() -> str | None:
    return shutil.which("promtool")


def _apt(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise PromtoolMissing(f"apt-get {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def install() -> str:
    """The path of promtool, installed from Debian's `prometheus` package if missing."""
    path = found()
    if path is not None:
        return path
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise PromtoolMissing("promtool is missing: install Prometheus (Debian: apt-get install prometheus, as root)")
    started = time.monotonic()
    own_policy = not POLICY_RC.exists()
    if own_policy:
        POLICY_RC.write_text(NO_SERVICE_STARTS)
        POLICY_RC.chmod(0o755)
    try:
        say("apt-get update...")
        _apt("update", "-q")
        say("apt-get install prometheus (for promtool; no service is started)...")
        _apt("install", "-y", "-q", "--no-install-recommends", "prometheus")
    finally:
        if own_policy:
            POLICY_RC.unlink()
    path = found()
    if path is None:
        raise PromtoolMissing("the prometheus package installed no promtool on PATH")
    say(f"installed {path} in {time.monotonic() - started:.0f}s")
    return path


def checks(promtool: str) -> list[list[str]]:
    """Every promtool run that judges ops/prometheus: rule syntax, the alert unit tests, the config."""
    rules = sorted(str(p) for p in (PROMETHEUS_DIR / "rules").glob("*.yml"))
    tests = sorted(str(p) for p in (PROMETHEUS_DIR / "tests").glob("*.yml"))
    return [
        [promtool, "check", "rules", *rules],
        [promtool, "test", "rules", *tests],
        [promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")],
    ]


def run_checks(promtool: str) -> int:
    """One line per check; promtool's own output only when a check fails."""
    for command in checks(promtool):
        what = " ".join(Path(part).name if part.startswith(str(ROOT)) else part for part in command[1:])
        result = subprocess.run(command, cwd=PROMETHEUS_DIR, capture_output=True, text=True)
        if result.returncode != 0:
            say(f"{what}: FAILED")
            print(result.stdout + result.stderr, flush=True)
            return result.returncode
        say(f"{what}: ok")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.promtool")
    parser.add_argument("command", choices=["install", "test"])
    args = parser.parse_args()
    try:
        promtool = install()
    except PromtoolMissing as exc:
        say(str(exc))
        sys.exit(1)
    if args.command == "install":
        print(promtool)
        return
    sys.exit(run_checks(promtool))


if __name__ == "__main__":
    main()
