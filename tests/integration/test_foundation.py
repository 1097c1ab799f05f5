"""The foundation against the real broker and database of the test environment."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from connectors.avro import EventDecodeError, SingleObjectCodec
from connectors.config import Config
from connectors.postgres import migrate, migration_files
from connectors.topics import DECLARED_TOPICS, WALLET_MOVEMENT_REQUIRED
from devtools.sample_data import SAMPLE_WALLETS, load_sample_wallets, sample_event_id
from domain.ids import derive_id
from streams.envelope import command_record, new_meta
from tests.integration.kafka_helpers import events_for_key
from tests.support.kafka import admin as admin_access
from tests.support.kafka import reader
from tests.support.postgres import inspect_as_owner

codec = SingleObjectCodec()


@pytest.fixture
def scratch_topic(config: Config):
    admin = AdminClient(admin_access(config).confluent())  # the test's own topic
    name = f"test.scratch-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result()
    yield name
    admin.delete_topics([name])[name].result()


async def produce_and_consume(config: Config, topic: str, value: bytes) -> bytes:
    producer = AIOKafkaProducer(**admin_access(config).aiokafka())
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, **admin_access(config).aiokafka(), auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        message = await consumer.getone()
        return message.value
    finally:
        await consumer.stop()


def test_every_declared_topic_exists_with_its_partitions_and_never_expires(config: Config) -> None:
    admin = AdminClient(reader(config).confluent())  # the console sees every declared topic's configuration
    topics = admin.list_topics(timeout=10).topics
    resources = [ConfigResource(ConfigResource.Type.TOPIC, spec.name) for spec in DECLARED_TOPICS]
    configs = {r.name: f.result() for r, f in admin.describe_configs(resources).items()}
    for spec in DECLARED_TOPICS:
        assert len(topics[spec.name].partitions) == config.kafka.partitions, spec.name
        assert configs[spec.name]["retention.ms"].value == "-1", spec.name
        assert configs[spec.name]["cleanup.policy"].value == spec.cleanup_policy, spec.name


async def test_an_avro_event_round_trips_through_a_real_topic_with_its_envelope(
    config: Config, scratch_topic: str
) -> None:
    meta = new_meta(correlation_id=str(uuid.uuid4()), causation_id=str(uuid.uuid4()))
    event = command_record(
        "PaymentSucceeded",
        meta,
        payment_id=str(uuid.uuid4()),
        user_id=str(uuid.uuid4()),
        amount={"amount": 5000, "currency": "USD"},
        method="wallet",
    )
    received = codec.decode(await produce_and_consume(config, scratch_topic, codec.encode(event)))
    assert received == {**event, "operation": None}  # an optional field left out reads as its default
    assert received["envelope"]["occurred_at"] == meta.occurred_at
    assert received["envelope"]["causation_id"] == meta.causation_id


async def test_garbage_bytes_on_a_topic_give_the_clear_decode_error(config: Config, scratch_topic: str) -> None:
    raw = await produce_and_consume(config, scratch_topic, b"\x00\x01not avro at all")
    with pytest.raises(EventDecodeError) as error:
        codec.decode(raw)
    assert "single-object marker" in error.value.reason
    assert error.value.data == b"\x00\x01not avro at all"


async def test_sample_wallets_are_on_their_topic_exactly_once_after_two_more_loads(config: Config) -> None:
    assert await load_sample_wallets(config) == 0  # `make test` loaded them already
    assert await load_sample_wallets(config) == 0
    for wallet_id, user_id, balance, currency in SAMPLE_WALLETS:
        events = await events_for_key(config, WALLET_MOVEMENT_REQUIRED.name, wallet_id)
        openings = [e for e in events if e["envelope"]["event_id"] == sample_event_id(wallet_id)]
        assert len(openings) == 1, wallet_id
        assert (openings[0]["user_id"], openings[0]["opening_balance"], openings[0]["currency"]) == (
            user_id,
            balance,
            currency,
        )


async def test_migrations_are_applied_once_and_recorded(config: Config) -> None:
    assert await migrate(config) == []
    conn = await inspect_as_owner(config)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    finally:
        await conn.close()
    assert versions == [version for version, _ in migration_files()]
    assert {"projection_offsets", "wallets", "wallet_movements"} <= tables


def test_deterministic_ids_do_not_depend_on_the_process() -> None:
    assert derive_id("payment-debit", "p1") == derive_id("payment-debit", "p1") != derive_id("payment-debit", "p2")
