"""ConfluentCodec against a real Confluent-compatible registry (Apicurio), which
`make test-registry` starts and names in REGISTRY_URL; skipped without one."""

from __future__ import annotations

import json
import os
import struct
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

from connectors.avro import ConfluentCodec, EventDecodeError, SchemaCatalog
from connectors.config import load_config
from connectors.credentials import ADMIN
from connectors.kafka_admin import admin_client, ensure_topics
from connectors.kafka_io import EventPublisher
from connectors.kafka_security import kafka_access
from connectors.topics import TopicSpec
from devtools.localinfra import kafka_reachable
from devtools.registry import URL_VARIABLE
from tests.support.avro_samples import sample_datum

REGISTRY_URL = os.environ.get(URL_VARIABLE, "")
pytestmark = pytest.mark.skipif(not REGISTRY_URL, reason=f"needs a registry in {URL_VARIABLE}: make test-registry")

CATALOG = SchemaCatalog.default()
EVENT_TYPES = CATALOG.event_types()


def make_event(event_type: str) -> dict[str, Any]:
    event: dict[str, Any] = sample_datum(CATALOG.schema(event_type))
    event["envelope"] = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": 1_700_000_123_456,
        "correlation_id": str(uuid.uuid4()),
        "causation_id": None,
        "actor_subject": "dev-admin",
        "actor_roles": ["admin"],
    }
    return event


def schema_id_of(data: bytes) -> int:
    return int(struct.unpack(">I", data[1:5])[0])


@pytest.fixture(scope="module")
def codec() -> ConfluentCodec:
    return ConfluentCodec(REGISTRY_URL)


@pytest.fixture(scope="module")
def registry() -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": REGISTRY_URL})


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_wire_format_is_magic_byte_and_registry_id(codec: ConfluentCodec, event_type: str) -> None:
    event = make_event(event_type)
    data = codec.encode(event)
    assert data[0] == 0
    assert schema_id_of(data) == codec.schema_id(event_type)
    assert codec.decode(data) == event


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_schema_is_registered_under_its_record_name(
    codec: ConfluentCodec, registry: SchemaRegistryClient, event_type: str
) -> None:
    data = codec.encode(make_event(event_type))
    subject = CATALOG.schema(event_type)["name"]  # the full name, namespace included
    assert subject.endswith(f".{event_type}")
    assert subject in registry.get_subjects()
    latest = registry.get_latest_version(subject)
    assert latest.schema_id == schema_id_of(data)
    assert latest.schema is not None and latest.schema.schema_str is not None
    stored = to_parsing_canonical_form(parse_schema(json.loads(latest.schema.schema_str)))
    assert stored == CATALOG.canonical(event_type)


def test_a_fresh_codec_fetches_the_writer_schema(codec: ConfluentCodec, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = ConfluentCodec(REGISTRY_URL)
    fetched: list[int] = []
    get_schema = fresh.registry.get_schema

    def spy(schema_id: int, *args: Any, **kwargs: Any) -> Any:
        fetched.append(schema_id)
        return get_schema(schema_id, *args, **kwargs)

    monkeypatch.setattr(fresh.registry, "get_schema", spy)
    for event_type in EVENT_TYPES:
        event = make_event(event_type)
        data = codec.encode(event)
        assert fresh.decode(data) == event
        assert fetched[-1] == schema_id_of(data)
    assert len(fetched) == len(set(fetched)) == len(EVENT_TYPES), "each id is fetched once, then cached"


def test_an_unknown_schema_id_is_a_decode_error(codec: ConfluentCodec, registry: SchemaRegistryClient) -> None:
    codec.encode(make_event(EVENT_TYPES[0]))  # the registry holds at least one schema
    unknown = 2**31 - 1
    with pytest.raises(EventDecodeError, match=f"unknown schema id {unknown}"):
        ConfluentCodec(REGISTRY_URL).decode(b"\x00" + struct.pack(">I", unknown) + b"\x02")


async def test_an_event_travels_through_kafka(codec: ConfluentCodec) -> None:
    config = load_config()
    if config.environment in ("local", "dev"):
        pytest.skip("writes to Kafka only in a test environment (make test-registry uses ENVIRONMENT=test)")
    if not kafka_reachable(config):
        pytest.skip(f"no test broker on {config.kafka.bootstrap_servers} (make test starts one)")
    topic = f"scratch.registry.{uuid.uuid4().hex[:8]}"
    # The test's own topic and group: the admin's.
    access = kafka_access(config, ADMIN)
    ensure_topics(access, config.kafka, (TopicSpec(topic, key="payment_id"),))
    admin = admin_client(access)
    # Assigned partitions, not a subscription: no consumer group is left behind.
    consumer = Consumer({**access.confluent(), "group.id": topic, "enable.auto.commit": False})
    try:
        event = make_event("PaymentCreated")
        publisher = EventPublisher(access, codec)
        await publisher.start()
        try:
            await publisher.publish(topic, "payment-1", event)
        finally:
            await publisher.stop()
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(config.kafka.partitions)])
        deadline = time.monotonic() + 30
        message = None
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
        assert message is not None and message.error() is None, f"nothing read back from {topic}"
        value = message.value()
        assert value is not None and value[:1] == b"\x00"
        assert message.key() == b"payment-1"
        assert ConfluentCodec(REGISTRY_URL).decode(value) == event
    finally:
        consumer.close()
        for future in admin.delete_topics([topic], operation_timeout=30).values():
            future.result()
