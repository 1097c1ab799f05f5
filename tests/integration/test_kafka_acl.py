"""Nobody moves money without a credential, on the real broker: a client without a login or
with a wrong password gets nothing, and each principal reaches exactly what
connectors/kafka_acl.py grants it: refused on every topic and group it does not own (the
forged wallet opening of issue 21 included), allowed on what its process needs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from connectors import topics as t
from connectors.config import Config
from connectors.credentials import (
    AUDITOR,
    CONSOLE,
    HEALTH,
    OPERATOR,
    PAYMENT_API,
    PROJECTOR,
    WALLET_API,
    Login,
    kafka_login,
)
from connectors.kafka_acl import GRANTS
from connectors.kafka_security import KafkaAccess, kafka_access
from connectors.log_reader import LogReader
from streams.envelope import command_record, new_meta
from tests.integration.kafka_helpers import codec, end_offsets
from tests.integration.test_wallet_service import open_wallet
from tests.support import Api, eventually

DECLARED = {spec.name for spec in t.DECLARED_TOPICS}
QUICK = {"request_timeout_ms": 5000}


@pytest.fixture
async def reader_as(config: Config) -> AsyncIterator[object]:
    opened: list[LogReader] = []

    async def open_as(principal: str) -> LogReader:
        reader = LogReader(kafka_access(config, principal), request_timeout_ms=5000)
        opened.append(reader)
        await reader.start()
        return reader

    yield open_as
    for reader in opened:
        await reader.stop()


async def produce(access: KafkaAccess | dict[str, object], topic: str, value: bytes, idempotent: bool = True) -> None:
    settings = access.aiokafka() if isinstance(access, KafkaAccess) else access
    producer = AIOKafkaProducer(**settings, enable_idempotence=idempotent, **QUICK)  # type: ignore[arg-type]
    try:
        await producer.start()
        await producer.send_and_wait(topic, value, key=b"acl-test")
    finally:
        await producer.stop()


async def consume(access: KafkaAccess | dict[str, object], topic: str) -> None:
    settings = access.aiokafka() if isinstance(access, KafkaAccess) else access
    consumer = AIOKafkaConsumer(topic, **settings, group_id=None, **QUICK)  # type: ignore[arg-type]
    try:
        await consumer.start()
        await consumer.getmany(timeout_ms=1000)
    finally:
        await consumer.stop()


def forged_opening() -> bytes:
    """The command of issue 21: a wallet opened with 10^12 minor units by whoever reached the broker."""
    wallet_id = str(uuid.uuid4())
    record = command_record(
        "WalletOpenRequested",
        new_meta(),
        wallet_id=wallet_id,
        user_id=str(uuid.uuid4()),
        currency="USD",
        opening_balance=10**12,
    )
    return codec.encode(record)


async def test_without_a_login_nothing_is_produced_or_consumed(config: Config) -> None:
    anonymous = {"bootstrap_servers": config.kafka.bootstrap_servers}  # PLAINTEXT to the SASL listener
    before = await end_offsets(config, t.WALLET_MOVEMENT_REQUIRED.name)
    with pytest.raises(KafkaConnectionError):
        await produce(anonymous, t.WALLET_MOVEMENT_REQUIRED.name, forged_opening())
    with pytest.raises(KafkaConnectionError):
        await consume(anonymous, t.WALLET_MOVEMENT_UPDATES.name)
    await consume(kafka_access(config, CONSOLE), t.WALLET_MOVEMENT_UPDATES.name)  # the broker is there
    assert await end_offsets(config, t.WALLET_MOVEMENT_REQUIRED.name) == before


@pytest.mark.parametrize("login", [Login(WALLET_API, "not-its-password"), Login("intruder", "whatever")])
async def test_a_wrong_password_or_an_unknown_user_gets_nothing(config: Config, login: Login) -> None:
    wrong = KafkaAccess(config.kafka.bootstrap_servers, login)
    before = await end_offsets(config, t.WALLET_MOVEMENT_REQUIRED.name)
    with pytest.raises(KafkaConnectionError):
        await produce(wrong, t.WALLET_MOVEMENT_REQUIRED.name, forged_opening())
    with pytest.raises(KafkaConnectionError):
        await consume(wrong, t.WALLET_MOVEMENT_UPDATES.name)
    assert kafka_login(config, WALLET_API).password != "not-its-password"
    await consume(kafka_access(config, WALLET_API), t.WALLET_MOVEMENT_UPDATES.name)  # its own password works
    assert await end_offsets(config, t.WALLET_MOVEMENT_REQUIRED.name) == before


# (who, topic it must not write): each would move money or fake an outcome if it could.
FOREIGN_WRITES = [
    (PROJECTOR, t.WALLET_MOVEMENT_REQUIRED),  # a read model forging a wallet command
    (PAYMENT_API, t.WALLET_MOVEMENT_UPDATES),  # an API faking the wallet's answer
    (WALLET_API, t.PAYMENT_CREATED),
    (PAYMENT_API, t.WALLET_MOVEMENT_REQUIRED),  # payments debit wallets only through the saga
    (OPERATOR, t.PAYMENT_SUCCEEDED),  # replay puts letters back; it never writes an outcome
    (WALLET_API, t.PAYMENTS_CHANGELOG),  # a worker's table
]


@pytest.mark.parametrize(("principal", "spec"), FOREIGN_WRITES, ids=lambda v: getattr(v, "name", v))
async def test_a_principal_cannot_write_a_topic_it_does_not_own(
    config: Config, principal: str, spec: t.TopicSpec
) -> None:
    before = await end_offsets(config, spec.name)
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(kafka_access(config, principal), spec.name, forged_opening())
    assert await end_offsets(config, spec.name) == before


@pytest.mark.parametrize("principal", [CONSOLE, AUDITOR, HEALTH])
async def test_the_readers_cannot_produce_at_all(config: Config, principal: str) -> None:
    before = await end_offsets(config, t.WALLET_MOVEMENT_REQUIRED.name)
    # An idempotent producer needs WRITE on some topic (KIP-679); they have none.
    with pytest.raises(ClusterAuthorizationFailedError):
        await produce(kafka_access(config, principal), t.WALLET_MOVEMENT_REQUIRED.name, forged_opening())
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(kafka_access(config, principal), t.WALLET_MOVEMENT_REQUIRED.name, b"x", idempotent=False)
    assert await end_offsets(config, t.WALLET_MOVEMENT_REQUIRED.name) == before


# (who, topic it may see but not read)
FOREIGN_READS = [
    (WALLET_API, t.WALLET_MOVEMENT_REQUIRED),  # writes the commands, reads only their outcomes
    (CONSOLE, t.PAYMENTS_CHANGELOG),  # the payment table holds the payer's provider token
    (HEALTH, t.PAYMENT_SUCCEEDED),  # the gateway holds it: offsets and timestamps, never an event
]


@pytest.mark.parametrize(("principal", "spec"), FOREIGN_READS, ids=lambda v: getattr(v, "name", v))
async def test_a_principal_cannot_read_a_topic_it_may_only_write_or_watch(
    reader_as, principal: str, spec: t.TopicSpec
) -> None:
    reader = await reader_as(principal)
    reader.add({tp: 0 for tp in reader.all_partitions([spec.name])})
    with pytest.raises(TopicAuthorizationFailedError):
        for _ in range(10):
            await reader.fetch(timeout_ms=500)


async def test_a_principal_cannot_join_another_process_group(config: Config) -> None:
    """A member of the payment worker's group would be handed its partitions and skip its commands."""
    consumer = AIOKafkaConsumer(
        t.WALLET_MOVEMENT_UPDATES.name, **kafka_access(config, PROJECTOR).aiokafka(), group_id=t.PAYMENT_WORKER
    )
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await consumer.start()
            await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()


@pytest.mark.parametrize("grant", GRANTS, ids=lambda g: g.principal)
async def test_each_principal_sees_exactly_its_topics_and_reads_what_it_needs(config: Config, reader_as, grant) -> None:
    reader = await reader_as(grant.principal)
    visible = reader.topics() & DECLARED  # the tests' own topics are the admin's
    assert visible == set(grant.reads + grant.writes + grant.sees)
    following = await reader.follow_from_end(grant.reads)
    assert len(following) == len(grant.reads) * config.kafka.partitions
    await reader.fetch(timeout_ms=500)  # no authorization error on any of them


async def test_the_services_write_and_read_as_themselves(wallet_api: Api, config: Config) -> None:
    """The wallet API writes the command and reads its outcome; the worker applies it; the
    projector shows it: each as its own principal (the services were started with no other)."""
    wallet_id = await open_wallet(wallet_api, 250)  # 201: the API saw the worker's outcome

    async def projected() -> dict | None:
        status, wallet = await wallet_api.get(f"/api/v1/wallet/{wallet_id}")
        return wallet if status == 200 and wallet["balance"] == 250 else None

    await eventually(projected, what="the projector showing the income")


async def test_a_consumer_group_of_the_console_is_its_own(config: Config) -> None:
    consumer = AIOKafkaConsumer(
        t.PAYMENT_DLQ.name,
        **kafka_access(config, CONSOLE).aiokafka(),
        group_id=f"console-acl-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=2000)
        assert consumer.assignment() == {TopicPartition(t.PAYMENT_DLQ.name, p) for p in range(config.kafka.partitions)}
    finally:
        await consumer.stop()
