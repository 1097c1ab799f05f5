"""Property-based fuzzing of both services from their own OpenAPI documents (schemathesis),
valid and invalid requests alike, with a fixed, derandomized budget: no request gets a 5xx,
and no refused request publishes a command."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from confluent_kafka import Consumer, TopicPartition
from hypothesis import HealthCheck, settings

from connectors.auth import issue_token
from connectors.avro import SingleObjectCodec
from connectors.config import Config
from streams.topics import EXTERNAL_PROVIDER_EVENTS, PAYMENT_CREATED, PAYMENT_REFUND, WALLET_MOVEMENT_REQUIRED

# Every command the fuzzer's requests publish carries this actor, so its events are told apart
# from those of the saga still finishing earlier tests' payments.
FUZZ_SUBJECT = f"fuzz-{uuid.uuid4()}"
COMMAND_TOPICS = [
    WALLET_MOVEMENT_REQUIRED.name,
    PAYMENT_CREATED.name,
    PAYMENT_REFUND.name,
    EXTERNAL_PROVIDER_EVENTS.name,
]
BUDGET = settings(
    max_examples=50, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
codec = SingleObjectCodec()


class CommandLog:
    """End offsets of the command topics, and what was appended between two readings."""

    def __init__(self, config: Config) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": config.kafka.bootstrap_servers, "group.id": f"fuzz-{uuid.uuid4()}"}
        )
        self.partitions = [(t, p) for t in COMMAND_TOPICS for p in range(config.kafka.partitions)]

    def ends(self) -> dict[tuple[str, int], int]:
        return {
            (t, p): self.consumer.get_watermark_offsets(TopicPartition(t, p), timeout=5)[1] for t, p in self.partitions
        }

    def appended(self, before: dict[tuple[str, int], int], after: dict[tuple[str, int], int]) -> list[dict[str, Any]]:
        grown = [TopicPartition(t, p, before[t, p]) for (t, p) in after if after[t, p] > before[t, p]]
        if not grown:
            return []
        self.consumer.assign(grown)
        wanted = sum(after[tp.topic, tp.partition] - tp.offset for tp in grown)
        events = []
        while len(events) < wanted:
            message = self.consumer.poll(5)
            assert message is not None, "appended messages could not be read back"
            if message.error() is None and message.offset() < after[message.topic(), message.partition()]:
                events.append(codec.decode(message.value()))
        self.consumer.unassign()
        return events

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture(scope="module")
def command_log(payment_system: Config) -> Iterator[CommandLog]:
    log = CommandLog(payment_system)
    yield log
    log.close()


def service_schema(config: Config, port: int) -> Any:
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
    # An admin reaches every operation; the role tests cover the narrower roles.
    schema.config.update(headers={"Authorization": f"Bearer {issue_token(config.auth, FUZZ_SUBJECT, ['admin'])}"})
    return schema


@pytest.fixture(scope="module")
def wallet_openapi(payment_system: Config) -> Any:
    return service_schema(payment_system, payment_system.wallet_api.port)


@pytest.fixture(scope="module")
def payment_openapi(payment_system: Config) -> Any:
    return service_schema(payment_system, payment_system.payment_api.port)


def check(case: Any, command_log: CommandLog) -> None:
    before = command_log.ends()
    response = case.call(timeout=30)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    if response.status_code < 400:
        return
    new = command_log.appended(before, command_log.ends())
    hook_id = case.body.get("id") if isinstance(case.body, dict) else None
    leaked = [
        e
        for e in new
        if e["envelope"]["actor_subject"] == FUZZ_SUBJECT
        or (
            hook_id is not None
            and e["envelope"]["event_type"] == "ProviderUpdate"
            and e["provider_event_id"] == str(hook_id)
        )
    ]
    assert not leaked, f"refused with {response.status_code} yet published {leaked}"


wallet_schema = schemathesis.pytest.from_fixture("wallet_openapi")
payment_schema = schemathesis.pytest.from_fixture("payment_openapi")


@wallet_schema.parametrize()
@BUDGET
def test_wallet_api_survives_fuzzing(case: Any, command_log: CommandLog) -> None:
    check(case, command_log)


@payment_schema.parametrize()
@BUDGET
def test_payment_api_survives_fuzzing(case: Any, command_log: CommandLog) -> None:
    check(case, command_log)
