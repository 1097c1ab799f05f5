"""The failure paths of every agent, on the real broker: a transient failure is applied once,
a permanent one is dead-lettered with its attempts and reason while its partition moves on, and
an infrastructure failure pauses (readiness says so) instead of dead-lettering a good message.

The worker is `tests/support/flaky_worker.py`: the real workers' pipeline around a handler
that fails on request."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from connectors.config import Config
from connectors.kafka_admin import ensure_topics
from connectors.log_reader import partition_for, read_messages
from connectors.topics import PAYMENT_DLQ, TopicSpec
from devtools.devctl import Process, Supervisor
from tests.integration.kafka_helpers import codec
from tests.support import eventually
from tests.support.kafka import admin, reader

# The flaky worker's topics (tests/support/flaky_worker.py builds its app when imported).
COMMANDS = TopicSpec("test.flaky.commands", key="id")
OUTCOMES = TopicSpec("test.flaky.outcomes", key="id")


@pytest.fixture(scope="module")
def flaky_worker(config: Config, supervisor: Supervisor) -> Iterator[int]:
    ensure_topics(admin(config), config.kafka, (COMMANDS, OUTCOMES))
    port = config.payment_worker.web_port + 2100
    process = Process(
        "flaky-worker",
        "tests.support.flaky_worker",
        ("worker", "-l", "info", "--web-port", str(port)),
        port,
        "a worker failing on request",
        "/ready/",
    )
    supervisor.start(process, extra_env={"FLAKY_WEB_PORT": str(port)})
    try:
        supervisor.wait_healthy(process)
        yield port
    finally:
        supervisor.stop(process.name)


@pytest.fixture
async def producer(config: Config) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(**admin(config).aiokafka(), acks="all")  # the test's own topic
    await producer.start()
    yield producer
    await producer.stop()


async def command(producer: AIOKafkaProducer, key: str, **fields: Any) -> tuple[str, int]:
    """Send one command on `key`'s partition; return its offset."""
    command_id = str(uuid.uuid4())
    sent = await producer.send_and_wait(
        COMMANDS.name, json.dumps({"id": command_id, **fields}).encode(), key=key.encode()
    )
    return command_id, sent.offset


async def outcomes(config: Config, command_id: str) -> list[dict[str, Any]]:
    parts = [TopicPartition(OUTCOMES.name, p) for p in range(config.kafka.partitions)]
    found = []
    async for message in read_messages(admin(config), parts):
        outcome = json.loads(message.value)
        if outcome["id"] == command_id:
            found.append(outcome)
    return found


async def letters_for(config: Config, offset: int, partition: int) -> list[dict[str, Any]]:
    parts = [TopicPartition(PAYMENT_DLQ.name, p) for p in range(config.kafka.partitions)]
    found = []
    async for message in read_messages(reader(config), parts):
        letter = codec.decode(message.value)
        if (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
            COMMANDS.name,
            partition,
            offset,
        ):
            found.append(letter)
    return found


async def ready(port: int) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/ready/") as response:
        return response.status, await response.json()


async def test_a_transient_failure_is_retried_and_applied_once(config: Config, flaky_worker: int, producer) -> None:
    command_id, _ = await command(producer, "transient", fail_times=2)
    found = await eventually(lambda: outcomes(config, command_id), what="the outcome after two failures")
    assert [o["attempts"] for o in found] == [3]


async def test_a_permanent_failure_is_dead_lettered_and_its_partition_moves_on(
    config: Config, flaky_worker: int, producer
) -> None:
    key = "permanent"
    partition = partition_for(key, config.kafka.partitions)
    refused_id, refused_offset = await command(producer, key, always_fail=True)
    after_id, _ = await command(producer, key)
    letters = await eventually(lambda: letters_for(config, refused_offset, partition), what="the dead letter")
    assert len(letters) == 1
    letter = letters[0]
    assert (letter["consumer"], letter["attempts"], letter["error_type"]) == (
        "flaky-worker",
        config.processing.max_attempts,
        "ValueError",
    )
    assert refused_id in letter["error_message"]
    assert json.loads(letter["value"])["id"] == refused_id
    # The next message of the same partition is handled: the letter did not block it.
    await eventually(lambda: outcomes(config, after_id), what="the next command's outcome")
    assert await outcomes(config, refused_id) == []


async def test_an_infrastructure_failure_pauses_says_so_and_never_dead_letters(
    config: Config, flaky_worker: int, producer, tmp_path: Path
) -> None:
    flag = tmp_path / "broker-away"
    flag.touch()
    key = "outage"
    partition = partition_for(key, config.kafka.partitions)
    held_id, held_offset = await command(producer, key, outage_flag=str(flag))
    behind_id, _ = await command(producer, key)

    async def unready() -> dict[str, Any] | None:
        status, body = await ready(flaky_worker)
        return body if status == 503 and f"{COMMANDS.name}/{partition}" in body["paused_partitions"] else None

    paused = await eventually(unready, what="readiness to report the paused partition")
    assert "KafkaConnectionError" in paused["paused_partitions"][f"{COMMANDS.name}/{partition}"]
    # Far past the attempts a message's own fault gets, and still no letter and no skipping ahead.
    await eventually(
        lambda: _retried_at_least(flaky_worker, config.processing.max_attempts + 2), what="repeated retries"
    )
    assert await letters_for(config, held_offset, partition) == []
    assert await outcomes(config, behind_id) == []
    flag.unlink()  # the outage ends
    await eventually(lambda: outcomes(config, held_id), timeout=30, what="the held command's outcome")
    await eventually(lambda: outcomes(config, behind_id), what="the command behind it")
    assert await letters_for(config, held_offset, partition) == []
    status, _ = await ready(flaky_worker)
    assert status == 200


async def _retried_at_least(port: int, times: int) -> bool:
    """The worker's own count of retries it made because of the infrastructure."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("processing_retries_total{") and 'cause="infrastructure"' in line:
            return float(line.split()[-1]) >= times
    return False
