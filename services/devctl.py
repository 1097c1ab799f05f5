"""Run the whole system on this machine: infrastructure, topics, migrations, sample
data and every service, each as a background process with a log and a pid file.

    python -m services.devctl up | down | status | setup | logs NAME
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

from connectors import localinfra
from connectors.config import Config, load_config
from connectors.kafka_admin import ensure_topics
from connectors.postgres import migrate
from services.sample_data import load_sample_wallets

RUN_DIR = localinfra.LOCAL / "run"
LOG_DIR = localinfra.LOCAL / "log"


@dataclass(frozen=True)
class Process:
    name: str
    module: str
    args: tuple[str, ...]
    health_port: int | None
    description: str


def processes(config: Config) -> list[Process]:
    return [
        Process(
            "wallet-worker",
            "streams.wallet_worker",
            ("worker", "-l", "info"),
            config.wallet_worker.web_port,
            "wallet saga steps (faust), table views",
        ),
        Process("projector", "services.projector", (), None, "writes the PostgreSQL views"),
        Process("wallet-api", "services.wallet_api", (), config.wallet_api.port, "wallet REST API"),
    ]


def say(message: str) -> None:
    print(f"[run] {message}", flush=True)


def setup(config: Config) -> None:
    created = ensure_topics(config.kafka)
    say(f"topics: {len(created)} created" + (f" ({', '.join(created)})" if created else ", all present"))
    applied = asyncio.run(migrate(config.postgres))
    say(f"migrations: {len(applied)} applied" + (f" ({', '.join(applied)})" if applied else ", up to date"))
    produced = asyncio.run(load_sample_wallets(config))
    say(f"sample wallets: {produced} opening command(s) produced, {3 - produced} already on the log")


def _pid(name: str) -> int | None:
    return localinfra.read_pid(RUN_DIR / f"{name}.pid")


def start_process(process: Process) -> subprocess.Popen[bytes] | None:
    if _pid(process.name):
        say(f"{process.name} already running")
        return None
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / f"{process.name}.log", "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", process.module, *process.args],
            cwd=localinfra.ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (RUN_DIR / f"{process.name}.pid").write_text(str(child.pid))
    return child


def wait_healthy(process: Process, child: subprocess.Popen[bytes] | None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (child is not None and child.poll() is not None) or _pid(process.name) is None:
            raise localinfra.InfraError(f"{process.name} exited; see {LOG_DIR / process.name}.log")
        if process.health_port is None:
            return
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{process.health_port}/", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers HTTP: it is up
        except OSError:
            time.sleep(0.3)
    raise localinfra.InfraError(
        f"{process.name} not answering on port {process.health_port} after {timeout:.0f}s; "
        f"see {LOG_DIR / process.name}.log"
    )


def up(config: Config) -> None:
    started = time.monotonic()
    localinfra.up(config)
    setup(config)
    children = {}
    for process in processes(config):
        say(f"starting {process.name}...")
        children[process.name] = start_process(process)
    for process in processes(config):
        wait_healthy(process, children[process.name])
    say(f"everything up in {time.monotonic() - started:.1f}s")
    status(config)


def stop_services(config: Config) -> None:
    for process in reversed(processes(config)):
        pid = _pid(process.name)
        if pid:
            say(f"stopping {process.name} (pid {pid})")
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes(config):
        while _pid(process.name) and time.monotonic() < deadline:
            time.sleep(0.2)
        pid = _pid(process.name)
        if pid:
            os.killpg(pid, signal.SIGKILL)
        (RUN_DIR / f"{process.name}.pid").unlink(missing_ok=True)


def status(config: Config) -> None:
    print(f"{'what':<16}{'where':<28}{'state':<9}description")
    print(
        f"{'kafka':<16}{config.kafka.bootstrap_servers:<28}"
        f"{'up' if localinfra.kafka_reachable(config) else 'down':<9}event store (Apache Kafka, KRaft)"
    )
    print(
        f"{'postgres':<16}{f'{config.postgres.host}:{config.postgres.port}':<28}{'':<9}"
        f"read views, database {config.postgres.database}"
    )
    for process in processes(config):
        where = f"http://127.0.0.1:{process.health_port}" if process.health_port else "-"
        print(f"{process.name:<16}{where:<28}{'up' if _pid(process.name) else 'down':<9}{process.description}")
    print(f"logs: {LOG_DIR}/<name>.log, kafka: {localinfra.kafka_home(config) / 'logs'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.devctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "stop-services", "status", "setup", "logs"])
    parser.add_argument("name", nargs="?")
    args = parser.parse_args(argv)
    config = load_config()
    try:
        if args.command == "up":
            up(config)
        elif args.command == "down":
            stop_services(config)
            localinfra.down(config)
        elif args.command == "stop-services":
            stop_services(config)
        elif args.command == "setup":
            setup(config)
        elif args.command == "status":
            status(config)
        elif args.command == "logs":
            names = [args.name] if args.name else [p.name for p in processes(config)]
            os.execvp("tail", ["tail", "-n", "100", "-F", *(str(LOG_DIR / f"{n}.log") for n in names)])
    except localinfra.InfraError as exc:
        print(f"[run] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
