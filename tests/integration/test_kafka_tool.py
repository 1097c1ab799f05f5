"""bin/kafka-tool against the real broker of the test environment."""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.config import Config, state_dir
from connectors.credentials import CONSOLE
from connectors.kafka_admin import admin_client, ensure_topics
from connectors.kafka_security import kafka_access
from connectors.topics import ALL_TOPICS, PAYMENT_DLQ, PAYMENTS_CHANGELOG, TopicSpec
from tests.support.kafka import admin as admin_access

TOOL = Path(__file__).resolve().parents[2] / "bin" / "kafka-tool"
SUBCOMMANDS = ("topics", "consumer", "producer", "groups", "perf", "help")


def kafka_tool(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(TOOL), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, f"kafka-tool {' '.join(args)} exited {result.returncode}: {result.stderr}"
    return result


@pytest.fixture
def scratch_topic(config: Config) -> Iterator[str]:
    name = f"scratch.kafka-tool.{uuid.uuid4().hex[:8]}"
    ensure_topics(admin_access(config), config.kafka, (TopicSpec(name, key="test"),))
    yield name
    admin = admin_client(admin_access(config))  # kept in a variable: the futures fail once the client is gone
    for future in admin.delete_topics([name], operation_timeout=30).values():
        future.result()


def test_usage_names_every_subcommand() -> None:
    usage = kafka_tool("help").stdout
    for subcommand in SUBCOMMANDS:
        assert f"\n  {subcommand} " in usage
    unknown = subprocess.run([str(TOOL), "no-such-tool"], capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 2
    assert "unknown subcommand" in unknown.stderr and "topics" in unknown.stderr


def test_topics_list_shows_every_declared_topic(config: Config) -> None:
    listed = set(kafka_tool("topics", "--list").stdout.split())
    assert {spec.name for spec in ALL_TOPICS} <= listed


def test_describe_shows_the_declared_retention(config: Config) -> None:
    summary = kafka_tool("topics", "--describe", "--topic", PAYMENT_DLQ.name).stdout.splitlines()[0]
    fields = dict(part.split(": ", 1) for part in summary.split("\t") if ": " in part)
    assert fields["Topic"] == PAYMENT_DLQ.name
    assert int(fields["PartitionCount"]) == config.kafka.partitions
    assert "retention.ms=-1" in fields["Configs"].split(",")


def test_a_given_bootstrap_server_and_login_are_used_as_is(config: Config, tmp_path: Path) -> None:
    # With an environment that has no config file, reading the config would fail.
    login = tmp_path / "console.properties"
    login.write_text(kafka_access(config, CONSOLE).properties())
    listed = kafka_tool(
        "topics",
        "--list",
        "--bootstrap-server",
        config.kafka.bootstrap_servers,
        "--command-config",
        str(login),
        env={"ENVIRONMENT": "no-such-environment"},
    ).stdout.split()
    assert PAYMENT_DLQ.name in listed


def test_it_connects_as_the_read_only_console_unless_told_otherwise(config: Config) -> None:
    properties = state_dir(config) / "kafka-console.properties"
    kafka_tool("topics", "--list")
    assert stat.S_IMODE(properties.stat().st_mode) == 0o600
    assert 'username="console"' in properties.read_text()
    refused = subprocess.run(
        [str(TOOL), "producer", "--topic", PAYMENT_DLQ.name, "--request-timeout-ms", "5000"],
        input="forged\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "AuthorizationException" in refused.stdout + refused.stderr, refused
    # The changelogs hold the workers' tables (a payment's provider token): the console sees their
    # offsets (a worker group's lag), never their contents.
    unread = subprocess.run(
        [str(TOOL), "consumer", "--topic", PAYMENTS_CHANGELOG.name, "--from-beginning", "--timeout-ms", "5000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"Not authorized to access topics: [{PAYMENTS_CHANGELOG.name}]" in unread.stderr, unread
    assert unread.stdout == "", "the console read a table"


def test_a_produced_line_is_consumed_back(scratch_topic: str) -> None:
    line = f"kafka-tool round trip {uuid.uuid4()}"
    # A topic of one's own is the admin's: --as admin.
    kafka_tool("producer", "--as", "admin", "--topic", scratch_topic, stdin=line + "\n")
    consumed = kafka_tool(
        "consumer",
        "--as=admin",
        "--topic",
        scratch_topic,
        "--from-beginning",
        "--max-messages",
        "1",
        "--timeout-ms",
        "20000",
        timeout=90,
    ).stdout
    assert consumed.splitlines() == [line]
