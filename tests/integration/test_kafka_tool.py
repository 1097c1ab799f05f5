"""bin/kafka-tool against the real broker of the test environment."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.config import Config
from connectors.kafka_admin import admin_client, ensure_topics
from connectors.topics import ALL_TOPICS, PAYMENT_DLQ, TopicSpec

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
    ensure_topics(config.kafka, (TopicSpec(name, key="test"),))
    yield name
    admin = admin_client(config.kafka)  # kept in a variable: the futures fail once the client is gone
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


def test_a_given_bootstrap_server_is_used_as_is(config: Config) -> None:
    # With an environment that has no config file, reading the config would fail.
    listed = kafka_tool(
        "topics",
        "--list",
        "--bootstrap-server",
        config.kafka.bootstrap_servers,
        env={"ENVIRONMENT": "no-such-environment"},
    ).stdout.split()
    assert PAYMENT_DLQ.name in listed


def test_a_produced_line_is_consumed_back(scratch_topic: str) -> None:
    line = f"kafka-tool round trip {uuid.uuid4()}"
    kafka_tool("producer", "--topic", scratch_topic, stdin=line + "\n")
    consumed = kafka_tool(
        "consumer",
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
