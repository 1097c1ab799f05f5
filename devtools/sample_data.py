"""The seed's sample wallets, entered as events on Kafka (the log is the source of
truth); the projector makes them visible in PostgreSQL.

Loading twice changes nothing: each opening command has a fixed event id, and one
already on the topic is not produced again. The openings act for the admin `setup`: an
opening balance is money entering the books, and only an operator or admin may give one.
"""

from __future__ import annotations

from aiokafka import TopicPartition

from connectors.avro import EventDecodeError, make_codec
from connectors.config import Config
from connectors.credentials import ADMIN as KAFKA_ADMIN
from connectors.kafka_io import EventPublisher
from connectors.kafka_security import kafka_access
from connectors.log_reader import partition_for, read_partitions
from connectors.topics import WALLET_MOVEMENT_REQUIRED
from domain.access import ADMIN, Principal
from domain.ids import derive_id
from streams.envelope import command_record, new_meta

# (wallet id, user id, opening balance in minor units, currency)
SAMPLE_WALLETS = (
    ("550e8400-e29b-41d4-a716-446655440001", "550e8400-e29b-41d4-a716-446655440010", 100_000, "USD"),
    ("550e8400-e29b-41d4-a716-446655440002", "550e8400-e29b-41d4-a716-446655440011", 50_000, "USD"),
    ("550e8400-e29b-41d4-a716-446655440003", "550e8400-e29b-41d4-a716-446655440012", 75_000, "EUR"),
)


# Who opens the sample wallets: named on their opening events, so the auditor sees the money's source.
SETUP = Principal("setup", frozenset({ADMIN}))


def sample_event_id(wallet_id: str) -> str:
    return derive_id("sample-wallet", wallet_id)


async def load_sample_wallets(config: Config) -> int:
    """Produce the opening commands not yet on the topic; return how many were produced."""
    codec = make_codec(config.kafka.schema_registry_url or None)
    topic = WALLET_MOVEMENT_REQUIRED.name
    partitions = sorted({partition_for(w[0], config.kafka.partitions) for w in SAMPLE_WALLETS})
    present = set()
    # Setup's principal: the sample wallets are entered by whoever sets the environment up.
    access = kafka_access(config, KAFKA_ADMIN)
    async for _, _, _, value in read_partitions(access, [TopicPartition(topic, p) for p in partitions]):
        try:
            present.add(codec.decode(value)["envelope"]["event_id"])
        except EventDecodeError:
            continue
    publisher = EventPublisher(access, codec)
    await publisher.start()
    produced = 0
    try:
        for wallet_id, user_id, balance, currency in SAMPLE_WALLETS:
            event_id = sample_event_id(wallet_id)
            if event_id in present:
                continue
            record = command_record(
                "WalletOpenRequested",
                new_meta(event_id=event_id, actor=SETUP),
                wallet_id=wallet_id,
                user_id=user_id,
                currency=currency,
                opening_balance=balance,
            )
            await publisher.publish(topic, wallet_id, record)
            produced += 1
    finally:
        await publisher.stop()
    return produced
