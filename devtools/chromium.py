"""Chromium and its WebDriver, for the web console's browser test (tests/integration/test_web_console.py).

Debian's `chromium` and `chromium-driver` packages; nothing is downloaded by Selenium: the test
points it at /usr/bin/chromedriver. Like devtools/promtool.py, the install runs only as root on a
machine with apt-get, says what it does and how long it took.

    python -m devtools.chromium install      # says where chromium and chromedriver are

Where it cannot install (not root, no apt-get) it says so and the browser test skips, except in
CI (CI=true), where the install failing fails the command, since the test must run there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

PACKAGES = ("chromium", "chromium-driver")


class ChromiumMissing(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"[chromium] {message}", flush=True)


def found() -> tuple[str, str] | None:
    """(chromium, chromedriver) when both are installed."""
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def _apt(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise ChromiumMissing(f"apt-get {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def install() -> tuple[str, str]:
    """The paths of chromium and chromedriver, installed from Debian if missing."""
    paths = found()
    if paths is not None:
        return paths
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise ChromiumMissing(
            "chromium is missing: install it (Debian: apt-get install chromium chromium-driver, as root)"
        )
    started = time.monotonic()
    say("apt-get update...")
    _apt("update", "-q")
    say(f"apt-get install {' '.join(PACKAGES)} (about 100 MB; a minute or two)...")
    _apt("install", "-y", "-q", "--no-install-recommends", *PACKAGES)
    paths = found()
    if paths is None:
        raise ChromiumMissing(f"{' and '.join(PACKAGES)} installed no chromium and chromedriver on PATH")
    say(f"installed {paths[0]} and {paths[1]} in {time.monotonic() - started:.0f}s")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.chromium")
    parser.add_argument("command", choices=["install"])
    parser.parse_args()
    try:
        browser, driver = install()
    except ChromiumMissing as exc:
        say(str(exc))
        if os.environ.get("CI") == "true":
            sys.exit(1)
        say("the web console's browser test will be skipped")
        return
    say(f"browser {browser}, driver {driver}")


if __name__ == "__main__":
    main()
