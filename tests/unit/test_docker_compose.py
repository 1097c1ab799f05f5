"""docker-compose.kafka.yml cannot run here (no Docker), so it is checked against the
configuration it must agree with: config/dev.json (its service names and ports),
config/local.json (the ports it publishes), connectors/topics.py, localinfra's broker
settings and the versions of the poms. Each check is also run on a broken copy
of the file to show that it can fail."""

from __future__ import annotations

import copy
import shlex
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from connectors.config import Config, load_config
from connectors.credentials import PG_SUPERUSER
from connectors.topics import ALL_TOPICS, CHANGELOG_TOPICS
from devtools.localinfra import KAFKA_POM, _kafka_properties
from devtools.pg_setup import SUPERUSER_PASSWORD_VARIABLE
from devtools.registry import APICURIO_POM, CCOMPAT_PATH

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.kafka.yml"
# Settings that must differ in a container (addresses, paths, quorum form); all others must match.
CONTAINER_SPECIFIC = {
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "inter.broker.listener.name",
    "controller.quorum.bootstrap.servers",
    "log.dirs",
}

Compose = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> Compose:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def dev() -> Config:
    return load_config("dev", env={})


@pytest.fixture(scope="module")
def local() -> Config:
    return load_config("local", env={})


def host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def published(service: Compose) -> dict[int, int]:
    """container port -> host port, from "HOST:CONTAINER" or "IP:HOST:CONTAINER"."""
    mapping = {}
    for entry in service.get("ports", []):
        *_, host, container = str(entry).split(":")
        mapping[int(container)] = int(host)
    return mapping


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """ "NAME://host:port,..." -> {NAME: (host, port)}."""
    result = {}
    for item in value.split(","):
        name, address = item.split("://")
        result[name] = host_port(address)
    return result


def pom_property(pom: Path, name: str) -> str:
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    element = ElementTree.parse(pom).find(f"m:properties/m:{name}", namespace)
    assert element is not None and element.text, f"{pom} has no property {name}"
    return element.text


def image_tag(service: Compose) -> str:
    return str(service["image"]).rsplit(":", 1)[1]


def init_script(service: Compose) -> list[str]:
    """The words of the one-shot's shell script, as `sh -ec` gets them from compose."""
    command = service["command"]
    script = (command[0] if isinstance(command, list) else command).replace("$$", "$").replace("\\\n", " ")
    words = shlex.shlex(script, posix=True, punctuation_chars=";")
    words.whitespace_split = True
    return list(words)


# ------------------------------------------------------------------ checks


def check_kafka(compose: Compose, dev: Config, local: Config) -> None:
    dev_host, dev_port = host_port(dev.kafka.bootstrap_servers)
    assert dev_host in compose["services"], f"config/dev.json's Kafka host {dev_host} is no service"
    kafka = compose["services"][dev_host]
    env = kafka["environment"]
    bound, advertised = listeners(env["KAFKA_LISTENERS"]), listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    internal = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert advertised[internal] == (dev_host, dev_port), "containers must reach Kafka at dev.json's address"
    assert bound[internal][1] == dev_port
    assert bound["CONTROLLER"][1] == dev.kafka.controller_port
    # The host reaches the broker through the published port, which must be local.json's.
    local_host, local_port = host_port(local.kafka.bootstrap_servers)
    outside = [name for name, address in advertised.items() if address == (local_host, local_port)]
    assert outside, f"no listener advertised as {local.kafka.bootstrap_servers} (config/local.json)"
    assert published(kafka).get(bound[outside[0]][1]) == local_port
    assert image_tag(kafka) == pom_property(KAFKA_POM, "kafka.version")


def check_broker_settings(compose: Compose, dev: Config, local: Config) -> None:
    env = compose["services"]["kafka"]["environment"]
    expected = dict(line.split("=", 1) for line in _kafka_properties(dev).splitlines() if line)
    for key, value in expected.items():
        if key in CONTAINER_SPECIFIC:
            continue
        variable = "KAFKA_" + key.upper().replace(".", "_")
        assert str(env.get(variable)) == value, f"{variable} should be {value} as in devtools/localinfra.py"


ADMIN_PASSWORD = "${KAFKA_ADMIN_PASSWORD:?see docker-compose.kafka.yml}"


def check_security(compose: Compose, dev: Config, local: Config) -> None:
    """Every listener wants a login, the admin's password comes from the environment only, the
    storage is formatted with the admin's SCRAM credential, and the one-shot logs in as admin."""
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}, "a listener without a login"
    assert set(protocols) == set(listeners(env["KAFKA_LISTENERS"]))
    for name in protocols:
        mechanism = "PLAIN" if name == env["KAFKA_CONTROLLER_LISTENER_NAMES"] else "SCRAM___SHA___512"
        jaas = env[f"KAFKA_LISTENER_NAME_{name}_{mechanism}_SASL_JAAS_CONFIG"]
        assert 'username="admin"' in jaas and f'password="{ADMIN_PASSWORD}"' in jaas, name
    script = kafka["command"][0]
    assert "--add-scram" in script and "name=admin,password=$$KAFKA_ADMIN_PASSWORD" in script
    assert env["KAFKA_ADMIN_PASSWORD"] == ADMIN_PASSWORD
    assert "--command-config" in " ".join(kafka["healthcheck"]["test"])
    topics = compose["services"]["topics"]
    assert topics["environment"]["KAFKA_ADMIN_PASSWORD"] == ADMIN_PASSWORD
    words = init_script(topics)
    creates = [i for i, word in enumerate(words) if word == "--create"]
    assert creates and all("--command-config" in words[i - 4 : i] for i in creates), "every create logs in"


def check_topics(compose: Compose, dev: Config, local: Config) -> None:
    service = compose["services"]["topics"]
    assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
    declared = {"TOPICS": ALL_TOPICS, "CHANGELOG_TOPICS": CHANGELOG_TOPICS}
    words = init_script(service)
    loops = [words[i : words.index("done", i)] for i, word in enumerate(words) if word == "for"]
    assert len(loops) == len(declared), "one loop per list of topics"
    for variable, specs in declared.items():
        names = service["environment"][variable].split()
        assert sorted(names) == sorted(spec.name for spec in specs), f"{variable} must be connectors/topics.py's"
        loop = next((loop for loop in loops if f"${variable}" in loop), None)
        assert loop is not None, f"the script must create the topics of {variable}"
        assert loop[loop.index("--bootstrap-server") + 1] == dev.kafka.bootstrap_servers
        assert loop[loop.index("--partitions") + 1] == str(dev.kafka.partitions)
        assert loop[loop.index("--replication-factor") + 1] == "1"
        configs = {loop[i + 1] for i, word in enumerate(loop) if word == "--config"}
        for spec in specs:
            assert configs == {f"{key}={value}" for key, value in spec.config().items()}, spec.name
        assert "retention.ms=-1" in configs


def check_postgres(compose: Compose, dev: Config, local: Config) -> None:
    assert dev.postgres.host in compose["services"], f"config/dev.json's host {dev.postgres.host} is no service"
    postgres = compose["services"][dev.postgres.host]
    env = postgres["environment"]
    assert int(env["PGPORT"]) == dev.postgres.port
    assert published(postgres).get(dev.postgres.port) == local.postgres.port
    assert env["POSTGRES_DB"] == dev.postgres.database == local.postgres.database
    assert env["POSTGRES_USER"] == PG_SUPERUSER
    # Passwords from the first start, as devtools/local_postgres.py: never trust, never a literal.
    assert env["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert "--auth=scram-sha-256" in env["POSTGRES_INITDB_ARGS"].split()
    assert env["POSTGRES_PASSWORD"].startswith("${" + SUPERUSER_PASSWORD_VARIABLE + ":?")
    assert postgres["image"].startswith("postgres:15")


def check_registry(compose: Compose, dev: Config, local: Config) -> None:
    url = urlsplit(dev.kafka.schema_registry_url)
    assert url.hostname in compose["services"], f"config/dev.json's registry host {url.hostname} is no service"
    registry = compose["services"][url.hostname]
    assert int(registry["environment"]["QUARKUS_HTTP_PORT"]) == url.port
    assert url.port in published(registry)
    assert url.path == CCOMPAT_PATH, "Apicurio serves the Confluent API there (tests/registry proves it)"
    assert registry["image"].startswith("apicurio/apicurio-registry:3.")
    assert image_tag(registry) == pom_property(APICURIO_POM, "apicurio.version")
    datasource = urlsplit(registry["environment"]["APICURIO_DATASOURCE_URL"].removeprefix("jdbc:"))
    assert (datasource.hostname, datasource.port) == (dev.postgres.host, dev.postgres.port)


CHECKS = [check_kafka, check_broker_settings, check_security, check_topics, check_postgres, check_registry]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_compose_agrees_with_configuration(
    check: Callable[..., None], compose: Compose, dev: Config, local: Config
) -> None:
    check(compose, dev, local)


def _set(path: str, value: Any) -> Callable[[Compose], None]:
    def mutate(doc: Compose) -> None:
        *parents, last = path.split("/")
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _replace_in_script(service: str, old: str, new: str) -> Callable[[Compose], None]:
    def mutate(doc: Compose) -> None:
        command = doc["services"][service]["command"]
        assert old in command[0]
        command[0] = command[0].replace(old, new)

    return mutate


def _drop_topic(doc: Compose) -> None:
    env = doc["services"]["topics"]["environment"]
    env["TOPICS"] = " ".join(env["TOPICS"].split()[1:])


def _rename_service(old: str, new: str) -> Callable[[Compose], None]:
    def mutate(doc: Compose) -> None:
        doc["services"][new] = doc["services"].pop(old)

    return mutate


K = "services/kafka/environment/"
BROKEN = {
    "kafka renamed": (_rename_service("kafka", "broker"), check_kafka),
    "internal port": (
        _set(K + "KAFKA_ADVERTISED_LISTENERS", "INTERNAL://kafka:9094,HOST://127.0.0.1:9092"),
        check_kafka,
    ),
    "bound port": (_set(K + "KAFKA_LISTENERS", "INTERNAL://:9094,HOST://:19092,CONTROLLER://:9093"), check_kafka),
    "controller port": (_set(K + "KAFKA_LISTENERS", "INTERNAL://:9092,HOST://:19092,CONTROLLER://:9099"), check_kafka),
    "host listener": (
        _set(K + "KAFKA_ADVERTISED_LISTENERS", "INTERNAL://kafka:9092,HOST://localhost:9092"),
        check_kafka,
    ),
    "published kafka port": (_set("services/kafka/ports/0", "9094:19092"), check_kafka),
    "kafka version": (_set("services/kafka/image", "apache/kafka:4.0.0"), check_kafka),
    "auto create": (_set(K + "KAFKA_AUTO_CREATE_TOPICS_ENABLE", "true"), check_broker_settings),
    "everyone allowed": (_set(K + "KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND", "true"), check_broker_settings),
    "no authorizer": (_set(K + "KAFKA_AUTHORIZER_CLASS_NAME", None), check_broker_settings),
    "another super user": (_set(K + "KAFKA_SUPER_USERS", "User:admin;User:ANONYMOUS"), check_broker_settings),
    "plaintext host listener": (
        _set(
            K + "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "INTERNAL:SASL_PLAINTEXT,HOST:PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        ),
        check_security,
    ),
    "password in the file": (
        _set(
            K + "KAFKA_LISTENER_NAME_HOST_SCRAM___SHA___512_SASL_JAAS_CONFIG",
            'org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="admin";',
        ),
        check_security,
    ),
    "formatted without the admin": (_replace_in_script("kafka", "--add-scram", "--no-scram"), check_security),
    "topics without a login": (
        _replace_in_script("topics", "--command-config /tmp/admin.properties", ""),
        check_security,
    ),
    "replication": (_set(K + "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "3"), check_broker_settings),
    "missing setting": (_set(K + "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", None), check_broker_settings),
    "topic missing": (_drop_topic, check_topics),
    "no wait for kafka": (_set("services/topics/depends_on/kafka/condition", "service_started"), check_topics),
    "topics unused": (_replace_in_script("topics", "$$TOPICS", "payment.created"), check_topics),
    "partitions": (_replace_in_script("topics", "--partitions 6", "--partitions 4"), check_topics),
    "retention": (_replace_in_script("topics", "retention.ms=-1", "retention.ms=604800000"), check_topics),
    "replicas": (_replace_in_script("topics", "--replication-factor 1", "--replication-factor 3"), check_topics),
    "topics bootstrap": (_replace_in_script("topics", "kafka:9092", "localhost:9092"), check_topics),
    "postgres port": (_set("services/postgres/environment/PGPORT", "5432"), check_postgres),
    "published postgres": (_set("services/postgres/ports/0", "5432:5433"), check_postgres),
    "database": (_set("services/postgres/environment/POSTGRES_DB", "payment"), check_postgres),
    "auth": (_set("services/postgres/environment/POSTGRES_HOST_AUTH_METHOD", "md5"), check_postgres),
    "trust at initdb": (_set("services/postgres/environment/POSTGRES_INITDB_ARGS", "--auth=trust"), check_postgres),
    "literal password": (_set("services/postgres/environment/POSTGRES_PASSWORD", "postgres"), check_postgres),
    "postgres version": (_set("services/postgres/image", "postgres:16"), check_postgres),
    "postgres renamed": (_rename_service("postgres", "db"), check_postgres),
    "registry renamed": (_rename_service("schema-registry", "registry"), check_registry),
    "registry port": (_set("services/schema-registry/environment/QUARKUS_HTTP_PORT", "8081"), check_registry),
    "registry unpublished": (_set("services/schema-registry/ports/0", "8180:8081"), check_registry),
    "registry version": (_set("services/schema-registry/image", "apicurio/apicurio-registry:3.3.3"), check_registry),
    "registry image": (_set("services/schema-registry/image", "confluentinc/cp-schema-registry:3.0.9"), check_registry),
    "postgres user": (_set("services/postgres/environment/POSTGRES_USER", "payments"), check_postgres),
    "registry storage": (
        _set(
            "services/schema-registry/environment/APICURIO_DATASOURCE_URL", "jdbc:postgresql://postgres:5432/registry"
        ),
        check_registry,
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_check_fails_on_a_broken_file(name: str, compose: Compose, dev: Config, local: Config) -> None:
    mutate, check = BROKEN[name]
    broken = copy.deepcopy(compose)
    mutate(broken)
    with pytest.raises(AssertionError):
        check(broken, dev, local)


# The same checks fail when the configuration moves and the compose file does not.
BROKEN_CONFIG = {
    "dev kafka port": ("dev", {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9094"}, check_kafka),
    "dev controller port": ("dev", {"KAFKA_CONTROLLER_PORT": "9095"}, check_kafka),
    "dev partitions": ("dev", {"KAFKA_PARTITIONS": "12"}, check_topics),
    "dev partitions (broker)": ("dev", {"KAFKA_PARTITIONS": "12"}, check_broker_settings),
    "dev postgres port": ("dev", {"POSTGRES_PORT": "5432"}, check_postgres),
    "dev database": ("dev", {"POSTGRES_DATABASE": "payments_dev"}, check_postgres),
    "dev registry path": (
        "dev",
        {"KAFKA_SCHEMA_REGISTRY_URL": "http://schema-registry:8080/apis/ccompat/v6"},
        check_registry,
    ),
    "dev registry port": (
        "dev",
        {"KAFKA_SCHEMA_REGISTRY_URL": "http://schema-registry:8081/apis/ccompat/v7"},
        check_registry,
    ),
    "local kafka port": ("local", {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9094"}, check_kafka),
    "local postgres port": ("local", {"POSTGRES_PORT": "5434"}, check_postgres),
    "local database": ("local", {"POSTGRES_DATABASE": "payments_local"}, check_postgres),
}


@pytest.mark.parametrize("name", sorted(BROKEN_CONFIG))
def test_each_check_fails_when_the_configuration_moves(name: str, compose: Compose, dev: Config, local: Config) -> None:
    environment, overrides, check = BROKEN_CONFIG[name]
    moved = load_config(environment, env=overrides)
    with pytest.raises(AssertionError):
        check(compose, moved, local) if environment == "dev" else check(compose, dev, moved)
