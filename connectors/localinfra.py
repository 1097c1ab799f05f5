"""Local infrastructure without Docker: a real Kafka broker and a real PostgreSQL.

Kafka 4 (single KRaft node) runs from jars that Maven resolves from Maven Central
into `.local/kafka/lib` (a pom in `connectors/infra/kafka/`). PostgreSQL runs from
the machine's server binaries as a cluster under `.local/postgres`, started as the
`postgres` user when we are root (initdb and pg_ctl refuse to run as root).

    python -m connectors.localinfra up|down|status|kafka-log|reset
"""

from __future__ import annotations

import argparse
import base64
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from connectors.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
KAFKA_LIB = LOCAL / "kafka-lib"
KAFKA_POM = ROOT / "connectors" / "infra" / "kafka" / "pom.xml"
KAFKA_LOG4J = ROOT / "connectors" / "infra" / "kafka" / "log4j2.properties"
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def say(message: str) -> None:
    print(f"[infra] {message}", flush=True)


class InfraError(RuntimeError):
    """A local server could not be installed or started; the message says what to do."""


# ---------------------------------------------------------------- Kafka


def kafka_jars_ready() -> bool:
    marker = KAFKA_LIB / ".resolved"
    return marker.exists() and marker.stat().st_mtime >= KAFKA_POM.stat().st_mtime


def install_kafka() -> None:
    if kafka_jars_ready():
        return
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise InfraError("Kafka needs Java 17 and Maven on PATH (apt-get install maven openjdk-17-jdk-headless)")
    say("resolving Apache Kafka from Maven Central (first run only, ~1 min)...")
    started = time.monotonic()
    shutil.rmtree(KAFKA_LIB, ignore_errors=True)
    result = subprocess.run(
        ["mvn", "-B", "-q", "-f", str(KAFKA_POM), "dependency:copy-dependencies", f"-DoutputDirectory={KAFKA_LIB}"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise InfraError(
            "Maven could not resolve Kafka. Check that Maven Central is reachable "
            f"(mvn -f {KAFKA_POM} dependency:copy-dependencies).\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    (KAFKA_LIB / ".resolved").touch()
    say(f"Kafka jars ready in {time.monotonic() - started:.0f}s ({len(list(KAFKA_LIB.glob('*.jar')))} jars)")


def state_dir(config: Config) -> Path:
    """Each environment (local, test) has its own broker data and cluster, so the test
    suite never disturbs a system started with `make run`."""
    return LOCAL / config.environment


def kafka_home(config: Config) -> Path:
    return state_dir(config) / "kafka"


def kafka_port(config: Config) -> int:
    return int(config.kafka.bootstrap_servers.rsplit(":", 1)[1])


def _kafka_properties(config: Config) -> str:
    port, controller = kafka_port(config), config.kafka.controller_port
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={kafka_home(config) / 'data'}",
            # One broker: internal topics cannot have more replicas than that.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=6",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=6",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            # Topics are declared by the project (streams/topics.py); a typo must fail, not create.
            "auto.create.topics.enable=false",
            f"num.partitions={config.kafka.partitions}",
            "",
        ]
    )


def read_pid(path: Path) -> int | None:
    """The pid in `path` if that process is alive (a zombie, exited but not yet reaped, is not)."""
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return pid
    return None if state in ("Z", "X") else pid


def kafka_reachable(config: Config, timeout: float = 2.0) -> bool:
    from confluent_kafka.admin import AdminClient

    settings: dict[str, Any] = {
        "bootstrap.servers": config.kafka.bootstrap_servers,
        "log_level": 0,
        "logger": _SilentLogger(),
    }
    admin = AdminClient(settings)
    try:
        admin.list_topics(timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable yet"
        return False


class _SilentLogger:
    """librdkafka logs every refused connection while we poll for readiness."""

    def log(self, *args: object) -> None:
        pass


def start_kafka(config: Config) -> None:
    home = kafka_home(config)
    home.mkdir(parents=True, exist_ok=True)
    pid_file = home / "kafka.pid"
    if read_pid(pid_file) or kafka_reachable(config, 1.0):
        say(f"kafka already running on {config.kafka.bootstrap_servers}")
        return
    install_kafka()
    properties = home / "server.properties"
    properties.write_text(_kafka_properties(config))
    classpath = f"{KAFKA_LIB}/*"
    java = [
        "java",
        "-Xms256m",
        "-Xmx1g",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
        f"-Dkafka.logs.dir={home / 'logs'}",
        "-cp",
        classpath,
    ]
    if not (home / "data" / "meta.properties").exists():
        say("formatting Kafka storage (KRaft, single node)...")
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        formatted = subprocess.run(
            [*java, "kafka.tools.StorageTool", "format", "--standalone", "-t", cluster_id, "-c", str(properties)],
            capture_output=True,
            text=True,
        )
        if formatted.returncode != 0:
            raise InfraError(
                f"formatting Kafka storage in {home / 'data'} failed; `make reset` starts it afresh.\n"
                f"{formatted.stdout[-1500:]}{formatted.stderr[-1500:]}"
            )
    (home / "logs").mkdir(parents=True, exist_ok=True)
    say(f"starting kafka on {config.kafka.bootstrap_servers}...")
    with open(home / "logs" / "stdout.log", "ab") as out:
        process = subprocess.Popen(
            [*java, "kafka.Kafka", str(properties)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    pid_file.write_text(str(process.pid))
    deadline = time.monotonic() + 90
    while not kafka_reachable(config):
        if process.poll() is not None:
            raise InfraError(
                f"kafka exited with {process.returncode}; see {home / 'logs'} "
                "(is the port taken? set KAFKA_BOOTSTRAP_SERVERS / KAFKA_CONTROLLER_PORT)"
            )
        if time.monotonic() > deadline:
            raise InfraError(f"kafka did not answer a metadata request in 90s; see {home / 'logs'}")
        time.sleep(0.5)
    say(f"kafka ready on {config.kafka.bootstrap_servers} (pid {process.pid})")


def _stop_pid(pid_file: Path, name: str, grace: float = 20.0) -> None:
    pid = read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return
    say(f"stopping {name} (pid {pid})...")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and read_pid(pid_file):
        time.sleep(0.2)
    if read_pid(pid_file):
        say(f"{name} did not stop in {grace:.0f}s; killing it")
        os.kill(pid, signal.SIGKILL)
    # Gone for good before we return: a dying broker still writes to its data directory,
    # and a reset that deletes it meanwhile leaves a half-made one that `format` refuses.
    while read_pid(pid_file):
        time.sleep(0.1)
    pid_file.unlink(missing_ok=True)


def stop_kafka(config: Config) -> None:
    _stop_pid(kafka_home(config) / "kafka.pid", "kafka")


# ---------------------------------------------------------------- PostgreSQL


def _pg_data_dir(config: Config) -> Path:
    """The cluster lives in .local/postgres unless the postgres user cannot reach it
    (a checkout under /root); then it lives in /var/tmp and .local/postgres links to it."""
    link = state_dir(config) / "postgres"
    if link.is_symlink() or link.exists():
        return link.resolve()
    if os.geteuid() == 0 and not _traversable_by_postgres(LOCAL):
        tag = uuid.uuid5(uuid.NAMESPACE_URL, str(link)).hex[:8]
        target = Path("/var/tmp") / f"payments-postgres-{config.environment}-{tag}"
        target.mkdir(parents=True, exist_ok=True)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
        return target
    link.mkdir(parents=True, exist_ok=True)
    return link


def _traversable_by_postgres(path: Path) -> bool:
    for parent in [path, *path.parents]:
        if parent.exists() and not (parent.stat().st_mode & 0o001):
            return False
    return True


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _ensure_postgres_user() -> None:
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        say("creating system user postgres (initdb refuses to run as root)")
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)


def start_postgres(config: Config) -> None:
    if not (PG_BIN / "pg_ctl").exists():
        raise InfraError(
            f"PostgreSQL server binaries not found in {PG_BIN} (apt-get install postgresql-15, or set PG_BIN)"
        )
    _ensure_postgres_user()
    base = _pg_data_dir(config)
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    if not (data / "PG_VERSION").exists():
        say("initialising a PostgreSQL cluster...")
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "initdb"), "-D", str(data), "--auth=trust", "-U", config.postgres.user, "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
        )
    status = subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "status"]), capture_output=True)
    if status.returncode != 0:
        say(f"starting postgres on {config.postgres.host}:{config.postgres.port}...")
        options = (
            f"-p {config.postgres.port} -k {base} -c listen_addresses={config.postgres.host} "
            "-c fsync=on -c max_connections=200"
        )
        result = subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(data),
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(base / "postgres.log"),
                    "-o",
                    options,
                    "start",
                ]
            ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise InfraError(
                f"postgres did not start ({result.stdout.strip()} {result.stderr.strip()}); "
                f"see {base / 'postgres.log'} (is port {config.postgres.port} taken? set POSTGRES_PORT)"
            )
    _ensure_database(config, base)
    say(f"postgres ready on {config.postgres.host}:{config.postgres.port}, database {config.postgres.database}")


def _ensure_database(config: Config, socket_dir: Path) -> None:
    psql = [
        str(PG_BIN / "psql"),
        "-h",
        str(socket_dir),
        "-p",
        str(config.postgres.port),
        "-U",
        config.postgres.user,
        "-d",
        "postgres",
        "-tAc",
    ]
    exists = subprocess.run(
        _as_postgres([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{config.postgres.database}'"]),
        capture_output=True,
        text=True,
        check=True,
    )
    if exists.stdout.strip() != "1":
        subprocess.run(
            _as_postgres([*psql, f'CREATE DATABASE "{config.postgres.database}"']), check=True, capture_output=True
        )


def stop_postgres(config: Config) -> None:
    data = _pg_data_dir(config) / "data"
    if (data / "postmaster.pid").exists():
        say("stopping postgres...")
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True
        )


# ---------------------------------------------------------------- commands


def up(config: Config) -> None:
    started = time.monotonic()
    LOCAL.mkdir(exist_ok=True)
    start_postgres(config)
    start_kafka(config)
    from connectors import stripe_mock  # it builds on this module

    if stripe_mock.wanted(config):
        stripe_mock.start(config)
    say(f"infrastructure ready in {time.monotonic() - started:.1f}s")


def down(config: Config) -> None:
    from connectors import stripe_mock

    if stripe_mock.wanted(config):
        stripe_mock.stop(config)
    stop_kafka(config)
    stop_postgres(config)


def reset(config: Config) -> None:
    down(config)
    shutil.rmtree(_pg_data_dir(config), ignore_errors=True)
    shutil.rmtree(state_dir(config), ignore_errors=True)
    say(f"{config.environment}: kafka data and postgres cluster removed; the next start begins empty")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connectors.localinfra",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        choices=[
            "up",
            "down",
            "status",
            "kafka-start",
            "kafka-stop",
            "kafka-log",
            "postgres-start",
            "postgres-stop",
            "reset",
        ],
    )
    args = parser.parse_args(argv)
    config = load_config()
    try:
        if args.command == "up":
            up(config)
        elif args.command == "down":
            down(config)
        elif args.command == "reset":
            reset(config)
        elif args.command == "kafka-start":
            start_kafka(config)
        elif args.command == "kafka-stop":
            stop_kafka(config)
        elif args.command == "postgres-start":
            start_postgres(config)
        elif args.command == "postgres-stop":
            stop_postgres(config)
        elif args.command == "kafka-log":
            os.execvp("tail", ["tail", "-n", "200", "-F", str(kafka_home(config) / "logs" / "server.log")])
        elif args.command == "status":
            print(f"kafka     {config.kafka.bootstrap_servers:<22} {'up' if kafka_reachable(config) else 'down'}")
            pg = subprocess.run(
                _as_postgres([str(PG_BIN / "pg_isready"), "-h", config.postgres.host, "-p", str(config.postgres.port)]),
                capture_output=True,
            )
            print(
                f"postgres  {config.postgres.host}:{config.postgres.port:<12} {'up' if pg.returncode == 0 else 'down'}"
            )
    except InfraError as exc:
        print(f"[infra] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
