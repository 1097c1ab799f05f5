"""Local infrastructure without Docker: a real Kafka broker and a real PostgreSQL.

Kafka 4 (single KRaft node) runs from jars that Maven resolves from Maven Central
into `.local/kafka/lib` (a pom in `devtools/infra/kafka/`). PostgreSQL runs from
the machine's server binaries as a cluster under `.local/postgres`, started as the
`postgres` user when we are root (initdb and pg_ctl refuse to run as root).

    python -m devtools.localinfra up|down|status|kafka-log|reset
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from connectors.config import LOCAL, ROOT, Config, ConfigError, load_config, state_dir
from connectors.credentials import ADMIN, Login, credentials_path, ensure_credentials, kafka_login, write_private
from connectors.kafka_security import MECHANISM, kafka_access
from devtools import stripe_mock
from devtools.infra_base import InfraError, read_pid, say, stop_pid
from devtools.local_postgres import pg_data_dir, postgres_ready, start_postgres, stop_postgres

KAFKA_LIB = LOCAL / "kafka-lib"
KAFKA_POM = ROOT / "devtools" / "infra" / "kafka" / "pom.xml"
KAFKA_LOG4J = ROOT / "devtools" / "infra" / "kafka" / "log4j2.properties"


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


def kafka_home(config: Config) -> Path:
    return state_dir(config) / "kafka"


def kafka_port(config: Config) -> int:
    return int(config.kafka.bootstrap_servers.rsplit(":", 1)[1])


# The client listener speaks only SASL SCRAM-SHA-512 and every request is authorised against the
# ACLs setup writes (connectors/kafka_acl.py); `admin` is the one super user. The controller
# listener takes SASL PLAIN with a static admin user in the broker's own properties: SCRAM
# credentials live in the metadata log, which the controller serves, so they cannot
# authenticate the controller's own connections (docs/security.md).
CLIENT_LISTENER = "CLIENT"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


def _kafka_properties(config: Config) -> str:
    """The broker's settings, without its secrets (`_kafka_secrets`)."""
    port, controller = kafka_port(config), config.kafka.controller_port
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
            f"listeners={CLIENT_LISTENER}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners={CLIENT_LISTENER}://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            f"listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,{CLIENT_LISTENER}:SASL_PLAINTEXT",
            f"inter.broker.listener.name={CLIENT_LISTENER}",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            "sasl.mechanism.controller.protocol=PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            f"authorizer.class.name={AUTHORIZER}",
            "allow.everyone.if.no.acl.found=false",
            f"super.users=User:{ADMIN}",
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
            # Topics are declared by the project (connectors/topics.py); a typo must fail, not create.
            "auto.create.topics.enable=false",
            f"num.partitions={config.kafka.partitions}",
            "",
        ]
    )


def _kafka_secrets(admin: Login) -> str:
    """How the broker logs in to itself: SCRAM on the client listener (inter-broker), PLAIN
    with a static user on the controller listener. Passwords are URL-safe: no quoting needed."""
    user, password = admin.username, admin.password
    return "\n".join(
        [
            f"listener.name.{CLIENT_LISTENER.lower()}.scram-sha-512.sasl.jaas.config="
            f'{SCRAM_MODULE} required username="{user}" password="{password}";',
            "listener.name.controller.plain.sasl.jaas.config="
            f'{PLAIN_MODULE} required username="{user}" password="{password}" user_{user}="{password}";',
            "",
        ]
    )


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64.

    One id in 64 would start with "-", which the storage tool's argument parser reads as an
    option ("--cluster-id: expected one argument"); Kafka's own generator skips those too.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_reachable(config: Config, timeout: float = 2.0) -> bool:
    """The broker answers the admin's metadata request (so it also accepts the admin's login)."""
    from confluent_kafka.admin import AdminClient

    try:
        access = kafka_access(config, ADMIN)
    except ConfigError:  # no credentials yet: nothing was ever started here
        return False
    settings: dict[str, Any] = {**access.confluent(), "log_level": 0, "logger": _SilentLogger()}
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
    ensure_credentials(config)  # the admin's password is needed to format, start and reach the broker
    refuse_storage_without_credentials(config)
    if read_pid(pid_file) or kafka_reachable(config, 1.0):
        say(f"kafka already running on {config.kafka.bootstrap_servers}")
        return
    install_kafka()
    admin = kafka_login(config, ADMIN)
    properties = home / "server.properties"
    write_private(properties, _kafka_properties(config) + _kafka_secrets(admin))
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
        cluster_id = new_cluster_id()
        # KIP-900: the admin's SCRAM credential is in the metadata log from the first start;
        # setup (as admin) adds every other principal.
        scram = f"{MECHANISM}=[name={admin.username},password={admin.password}]"
        storage_tool = [*java, "kafka.tools.StorageTool", "format", "--standalone", "-t", cluster_id]
        formatted = subprocess.run(
            [*storage_tool, "-c", str(properties), "--add-scram", scram],
            capture_output=True,
            text=True,
        )
        if formatted.returncode != 0:
            raise InfraError(
                f"formatting Kafka storage in {home / 'data'} failed; `make reset` starts it afresh.\n"
                f"{formatted.stdout[-1500:]}{formatted.stderr[-1500:]}"
            )
        _scram_marker(config).touch()
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
            raise InfraError(
                f"kafka did not answer the admin's metadata request in 90s; see {home / 'logs'} (if "
                f"{credentials_path(config)} was replaced since the broker was formatted, the admin's "
                "password no longer matches: `make reset`)"
            )
        time.sleep(0.5)
    say(f"kafka ready on {config.kafka.bootstrap_servers} (pid {process.pid})")


def _scram_marker(config: Config) -> Path:
    return kafka_home(config) / "formatted-with-scram"


def refuse_storage_without_credentials(config: Config) -> None:
    """Storage formatted before the broker needed credentials has no admin user, and a running
    broker from then listens without SASL: neither can be used, say how to start afresh."""
    if (kafka_home(config) / "data" / "meta.properties").exists() and not _scram_marker(config).exists():
        raise InfraError(
            f"the Kafka storage of {config.environment} ({kafka_home(config) / 'data'}) was formatted before "
            "Kafka required credentials, so it has no admin user. Start afresh (deletes the local events): "
            f"`ENVIRONMENT={config.environment} .venv/bin/python -m devtools.localinfra reset` "
            "(`make reset` for local)"
        )


def stop_kafka(config: Config) -> None:
    stop_pid(kafka_home(config) / "kafka.pid", "kafka")


# ---------------------------------------------------------------- commands


def up(config: Config) -> None:
    started = time.monotonic()
    LOCAL.mkdir(exist_ok=True)
    start_postgres(config)
    start_kafka(config)
    if stripe_mock.wanted(config):
        stripe_mock.start(config)
    say(f"infrastructure ready in {time.monotonic() - started:.1f}s")


def down(config: Config) -> None:
    if stripe_mock.wanted(config):
        stripe_mock.stop(config)
    stop_kafka(config)
    stop_postgres(config)


def reset(config: Config) -> None:
    down(config)
    shutil.rmtree(pg_data_dir(config), ignore_errors=True)
    shutil.rmtree(state_dir(config), ignore_errors=True)
    say(f"{config.environment}: kafka data and postgres cluster removed; the next start begins empty")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.localinfra",
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
            up_or_down = "up" if postgres_ready(config) else "down"
            print(f"postgres  {config.postgres.host}:{config.postgres.port:<12} {up_or_down}")
    except InfraError as exc:
        print(f"[infra] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
