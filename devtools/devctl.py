"""Run the whole system on this machine: infrastructure, topics, migrations, sample
data and every service, each as a background process with a log and a pid file.

    python -m devtools.devctl up | down | status | setup | logs NAME
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from connectors.auth import issue_token
from connectors.config import Config, load_config
from connectors.credentials import ADMIN, ensure_credentials
from connectors.kafka_admin import apply_acls, ensure_topics, ensure_users
from connectors.kafka_security import kafka_access
from devtools import localinfra
from devtools.local_postgres import postgres_ready
from devtools.pg_setup import prepare_database
from devtools.sample_data import load_sample_wallets
from services.system_health import OK, service_readiness


def run_dir(config: Config) -> Path:
    return localinfra.state_dir(config) / "run"


def log_dir(config: Config) -> Path:
    return localinfra.state_dir(config) / "log"


@dataclass(frozen=True)
class Process:
    name: str
    module: str
    args: tuple[str, ...]
    health_port: int | None
    description: str
    health_path: str = "/health"
    # What this process needs in its environment besides the configuration: a worker's second
    # process must be told its web port, which names its local store and its group membership.
    env: tuple[tuple[str, str], ...] = ()


def processes(config: Config) -> list[Process]:
    return [
        Process(
            "wallet-worker",
            "streams.wallet_worker",
            ("worker", "-l", "info", "--web-port", str(config.wallet_worker.web_port)),
            config.wallet_worker.web_port,
            "wallet saga steps (faust), table views",
            "/ready/",
        ),
        Process(
            "projector",
            "services.projector",
            (),
            config.projector.metrics_port,
            "writes the PostgreSQL views; /metrics",
        ),
        Process("wallet-api", "services.wallet_api", (), config.wallet_api.port, "wallet REST API"),
        Process(
            "payment-worker",
            "streams.payment_worker",
            ("worker", "-l", "info", "--web-port", str(config.payment_worker.web_port)),
            config.payment_worker.web_port,
            "payment saga steps (faust), payment table",
            "/ready/",
        ),
        Process("payment-api", "services.payment_api", (), config.payment_api.port, "payment REST API, webhooks"),
        Process(
            "provider-simulator",
            "simulator.provider",
            (),
            config.provider.port,
            "external payment provider (simulated), signed webhooks",
        ),
        Process("gateway", "services.gateway", (), config.gateway.port, "API gateway: auth, rate limits, request ids"),
        Process(
            "auditor",
            "services.auditor",
            (),
            config.auditor.port,
            "money auditor: invariants checked from the log; violations on /",
        ),
        Process(
            "web-console",
            "console.web",
            (),
            config.web_console.port,
            "operators' web console, at /console/ on the gateway",
        ),
    ]


def worker_peer(config: Config, name: str, n: int) -> Process:
    """Another process of worker `name` (scale-out: Kafka splits the partitions between them),
    on its own web port, with the environment that makes it use that port: to advertise, to
    name its local store and its static group membership (two processes sharing either would
    lock each other out of RocksDB, or fence each other out of the group)."""
    first = next(p for p in processes(config) if p.name == name)
    section = name.replace("-", "_")
    port = getattr(config, section).web_port + 1000 + n
    args = ("worker", "-l", "info", "--web-port", str(port))
    description = f"{first.description} (process {n + 1})"
    env = ((f"{section.upper()}_WEB_PORT", str(port)),)
    return Process(f"{name}-{n + 1}", first.module, args, port, description, "/ready/", env)


def say(message: str) -> None:
    print(f"[run] {message}", flush=True)


def setup(config: Config) -> None:
    ensure_credentials(config)
    admin = kafka_access(config, ADMIN)
    users = ensure_users(admin, config)
    say(f"kafka users: {len(users)} with their current passwords")
    added, removed = apply_acls(admin)
    say(f"kafka ACLs: {added} added, {removed} removed (connectors/kafka_acl.py)")
    created = ensure_topics(admin, config.kafka)
    say(f"topics: {len(created)} created" + (f" ({', '.join(created)})" if created else ", all present"))
    applied = asyncio.run(prepare_database(config))  # roles, passwords, migrations, grants
    say(f"migrations: {len(applied)} applied" + (f" ({', '.join(applied)})" if applied else ", up to date"))
    produced = asyncio.run(load_sample_wallets(config))
    say(f"sample wallets: {produced} opening command(s) produced, {3 - produced} already on the log")


class Supervisor:
    """Starts, watches and stops the service processes of one environment.

    Each process gets a pid file and a log under .local/<environment>/; the test
    suite uses the same class to start services and to SIGKILL them.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def pid_file(self, name: str) -> Path:
        return run_dir(self.config) / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return log_dir(self.config) / f"{name}.log"

    def pid(self, name: str) -> int | None:
        child = self.children.get(name)
        if child is not None and child.poll() is not None:
            return None  # exited (os.kill(pid, 0) would still find the zombie)
        return localinfra.read_pid(self.pid_file(name))

    def start(self, process: Process, extra_env: dict[str, str] | None = None) -> None:
        if self.pid(process.name):
            say(f"{process.name} already running")
            return
        run_dir(self.config).mkdir(parents=True, exist_ok=True)
        log_dir(self.config).mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "ENVIRONMENT": self.config.environment, **dict(process.env), **(extra_env or {})}
        with open(self.log_file(process.name), "ab") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", process.module, *process.args],
                cwd=localinfra.ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.children[process.name] = child
        self.pid_file(process.name).write_text(str(child.pid))

    def wait_healthy(self, process: Process, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid(process.name) is None:
                raise localinfra.InfraError(f"{process.name} exited; see {self.log_file(process.name)}")
            if process.health_port is None:
                return
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{process.health_port}{process.health_path}", timeout=1):
                    return
            except OSError:  # refused, or an HTTP error such as 503 while a worker recovers
                time.sleep(0.3)
        raise localinfra.InfraError(
            f"{process.name} not answering on port {process.health_port} after {timeout:.0f}s; "
            f"see {self.log_file(process.name)}"
        )

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM, grace: float = 15.0) -> None:
        pid = self.pid(name)
        if pid:
            os.killpg(pid, sig)
            deadline = time.monotonic() + grace
            while self.pid(name) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.pid(name):
                os.killpg(pid, signal.SIGKILL)
                while self.pid(name):
                    time.sleep(0.1)
        self.pid_file(name).unlink(missing_ok=True)
        self.children.pop(name, None)


def up(config: Config) -> None:
    started = time.monotonic()
    localinfra.up(config)
    setup(config)
    supervisor = Supervisor(config)
    for process in processes(config):
        say(f"starting {process.name}...")
        supervisor.start(process)
    for process in processes(config):
        supervisor.wait_healthy(process)
    say(f"everything up in {time.monotonic() - started:.1f}s")
    status(config)
    print_credentials(config)


# Sample users own the sample wallets; the operator and admin are development identities.
DEV_IDENTITIES = (
    ("550e8400-e29b-41d4-a716-446655440010", "user"),
    ("550e8400-e29b-41d4-a716-446655440011", "user"),
    ("550e8400-e29b-41d4-a716-446655440012", "user"),
    ("dev-operator", "operator"),
    ("dev-admin", "admin"),
)


def print_credentials(config: Config) -> None:
    """Bearer tokens for trying the APIs, signed with this environment's current key."""
    print(f"development credentials (valid {config.auth.token_ttl_s // 60} min; `make token` for more):")
    for subject, role in DEV_IDENTITIES:
        print(f"  {role:<9}{subject}\n    {issue_token(config.auth, subject, [role])}")
    print(f'use: curl -H "Authorization: Bearer <token>" http://127.0.0.1:{config.gateway.port}/api/v1/...')
    print(f"web console: http://127.0.0.1:{config.gateway.port}/console/ (log in with the operator's token)")


def stop_services(config: Config) -> None:
    supervisor = Supervisor(config)
    for process in reversed(processes(config)):
        if supervisor.pid(process.name):
            say(f"stopping {process.name}")
            supervisor.stop(process.name)


def status(config: Config) -> None:
    """What runs where and whether it is ready (its readiness page, not only a pid)."""
    supervisor = Supervisor(config)
    readiness = asyncio.run(service_readiness(config))
    print(f"{'what':<20}{'where':<28}{'state':<9}description")
    print(
        f"{'kafka':<20}{config.kafka.bootstrap_servers:<28}"
        f"{'up' if localinfra.kafka_reachable(config) else 'down':<9}event store (Apache Kafka, KRaft)"
    )
    print(
        f"{'postgres':<20}{f'{config.postgres.host}:{config.postgres.port}':<28}{postgres_state(config):<9}"
        f"read views, database {config.postgres.database}"
    )
    for process in processes(config):
        where = f"http://127.0.0.1:{process.health_port}" if process.health_port else "-"
        check = readiness[process.name]
        state = "ready" if check.state == OK else "unready" if supervisor.pid(process.name) else "down"
        print(f"{process.name:<20}{where:<28}{state:<9}{process.description}")
        if state == "unready":
            print(f"{'':<20}{check.detail}")
    print(f"logs: {log_dir(config)}/<name>.log, kafka: {localinfra.kafka_home(config) / 'logs'}")
    print("the whole system's health (lag, dead letters, violations): `payments health`")


def postgres_state(config: Config) -> str:
    """Whether the server accepts connections (pg_isready), as far as this machine can tell."""
    try:
        return "up" if postgres_ready(config) else "down"
    except OSError:  # no local PostgreSQL binaries (the Docker setup)
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.devctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "stop-services", "status", "setup", "logs"])
    parser.add_argument("name", nargs="?")
    args = parser.parse_args(argv)
    # A fresh topic's leader can need a moment; aiokafka logs each retry as an error.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
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
            os.execvp("tail", ["tail", "-n", "100", "-F", *(str(log_dir(config) / f"{n}.log") for n in names)])
    except localinfra.InfraError as exc:
        print(f"[run] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
