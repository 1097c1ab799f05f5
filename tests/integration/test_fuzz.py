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
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from connectors.auth import issue_token
from connectors.avro import SingleObjectCodec
from connectors.config import Config
from streams.topics import (
    EXTERNAL_PROVIDER_EVENTS,
    PAYMENT_CREATED,
    PAYMENT_REFUND,
    WALLET_BALANCE_UPDATE,
    WALLET_MOVEMENT_REQUIRED,
    WALLET_MOVEMENT_UPDATES,
)

# Every command the fuzzer's requests publish carries this actor, so its events are told apart
# from those of the saga still finishing earlier tests' payments.
FUZZ_SUBJECT = f"fuzz-{uuid.uuid4()}"
COMMAND_TOPICS = [
    WALLET_MOVEMENT_REQUIRED.name,
    PAYMENT_CREATED.name,
    PAYMENT_REFUND.name,
    EXTERNAL_PROVIDER_EVENTS.name,
]
# The wallet worker's outcomes: a refusal it decides (say, a replayed opening) is published
# as a command, so what must not appear then is an outcome that changed a wallet.
OUTCOME_TOPICS = [WALLET_MOVEMENT_UPDATES.name, WALLET_BALANCE_UPDATE.name]
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
        self.partitions = [(t, p) for t in COMMAND_TOPICS + OUTCOME_TOPICS for p in range(config.kafka.partitions)]

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
                events.append({**codec.decode(message.value()), "_topic": message.topic()})
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


def check(case: Any, command_log: CommandLog) -> None:
    before = command_log.ends()
    response = case.call(timeout=30)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    if response.status_code < 400:
        return
    error = response.json()["error"]
    # Refused by the API itself (credentials, roles, a named field, size): nothing may be
    # published. Refused by the wallet worker: the command is on the log, but no wallet changed.
    by_the_api = error["field"] is not None or response.status_code in (400, 401, 403, 413)
    new = command_log.appended(before, command_log.ends())
    hook_id = case.body.get("id") if isinstance(case.body, dict) else None

    def caused_by_this_request(event: dict[str, Any]) -> bool:
        if event["envelope"]["event_type"] == "ProviderUpdate":
            return event["provider_event_id"] == str(hook_id)
        if event["envelope"]["actor_subject"] != FUZZ_SUBJECT:
            return False
        if by_the_api:
            return True
        return event["_topic"] in OUTCOME_TOPICS and event.get("status") != "rejected"

    leaked = [e for e in new if caused_by_this_request(e)]
    assert not leaked, f"refused with {response.status_code} {error} yet published {leaked}"


def fuzz(schema: Any, command_log: CommandLog) -> int:
    """Every operation, valid and invalid requests; the number of operations fuzzed."""
    # Driven by hand rather than by schemathesis' pytest plugin, whose lazy loader does not
    # run on pytest 9.
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @BUDGET
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                check(case, command_log)

            run()
    return len(operations)


def test_wallet_api_survives_fuzzing(payment_system: Config, command_log: CommandLog) -> None:
    assert fuzz(service_schema(payment_system, payment_system.wallet_api.port), command_log) == 6


def test_payment_api_survives_fuzzing(payment_system: Config, command_log: CommandLog) -> None:
    assert fuzz(service_schema(payment_system, payment_system.payment_api.port), command_log) == 4
