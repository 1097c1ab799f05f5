"""How tests connect to the real broker: as a named principal, like every process does.

Reading is the console's (it may read every event topic and write none). A test that plants a
message writes as the principal that writes that topic in production (`writer_of`: the API for
a command, as a client forging past the API would), so the broker's ACLs hold in the tests as
they do in production. Only the tests' own topics and groups, which no service principal may
touch, are the admin's.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from connectors.config import Config
from connectors.credentials import (
    ADMIN,
    CONSOLE,
    PAYMENT_API,
    PAYMENT_WORKER,
    PROJECTOR,
    WALLET_API,
    WALLET_WORKER,
)
from connectors.kafka_acl import GRANT_OF
from connectors.kafka_security import KafkaAccess, kafka_access

# Who plants what: the APIs first (they write the commands), then the processes downstream.
WRITERS = (WALLET_API, PAYMENT_API, WALLET_WORKER, PAYMENT_WORKER, PROJECTOR)


def writer_of(topic: str) -> str:
    return next((p for p in WRITERS if topic in GRANT_OF[p].writes), ADMIN)


def writer(config: Config, topic: str) -> KafkaAccess:
    return kafka_access(config, writer_of(topic))


def reader(config: Config) -> KafkaAccess:
    return kafka_access(config, CONSOLE)


def admin(config: Config) -> KafkaAccess:
    """For the tests' own topics and groups only."""
    return kafka_access(config, ADMIN)


async def plant(config: Config, messages: Iterable[tuple[str, bytes | None, bytes]]) -> list[RecordMetadata]:
    """Write raw (topic, key, value) messages in order, each as the principal that writes its topic."""
    producers: dict[str, AIOKafkaProducer] = {}
    sent = []
    try:
        for topic, key, value in messages:
            principal = writer_of(topic)
            if principal not in producers:
                producers[principal] = AIOKafkaProducer(**kafka_access(config, principal).aiokafka(), acks="all")
                await producers[principal].start()
            sent.append(await producers[principal].send_and_wait(topic, value, key=key))
    finally:
        for producer in producers.values():
            await producer.stop()
    return sent
