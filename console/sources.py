"""Where the console reads: the log (through the one log reader, decoded into entries) and
PostgreSQL; failures said in words an operator can act on."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterable

import asyncpg
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError

from connectors.avro import make_codec
from connectors.config import Config, ConfigError
from connectors.credentials import CONSOLE
from connectors.kafka_security import KafkaAccess, kafka_access
from connectors.log_reader import LogReader, partition_for
from connectors.postgres import connect
from console.entries import Entry, to_entry


class ConsoleError(Exception):
    """Something the operator can fix; the message says how."""


def console_access(config: Config, principal: str = CONSOLE) -> KafkaAccess:
    """The console reads as `console`, which may write nothing; the credentials file is setup's."""
    try:
        return kafka_access(config, principal)
    except ConfigError as exc:
        raise ConsoleError(str(exc)) from exc


def kafka_hint(config: Config) -> str:
    return (
        f"cannot reach Kafka at {config.kafka.bootstrap_servers} (ENVIRONMENT={config.environment}): "
        "start it with `make run` (or set ENVIRONMENT to the environment you mean)"
    )


class Log:
    """The log as the console sees it: the one log reader, its messages decoded into entries."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.codec = make_codec(config.kafka.schema_registry_url or None)
        self.reader = LogReader(console_access(config), request_timeout_ms=10_000)

    async def __aenter__(self) -> Log:
        try:
            await asyncio.wait_for(self.reader.start(), 15)
        except (KafkaConnectionError, TimeoutError) as exc:
            await self.reader.stop()
            raise ConsoleError(kafka_hint(self.config)) from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.reader.stop()

    def partitions(self, topic: str) -> list[int]:
        found = self.reader.partitions(topic)
        if not found:
            raise ConsoleError(
                f"topic {topic!r} does not exist on {self.config.kafka.bootstrap_servers}: "
                "`make run` (devtools.devctl setup) creates every topic"
            )
        return found

    def key_partition(self, topic: str, key: str) -> TopicPartition:
        return TopicPartition(topic, partition_for(key, len(self.partitions(topic))))

    async def offsets_at(self, tps: Iterable[TopicPartition], since_ms: int | None) -> dict[TopicPartition, int]:
        return await self.reader.offsets_at(tps, since_ms)

    async def ends(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return await self.reader.ends(tps)

    def add(self, starts: dict[TopicPartition, int]) -> None:
        self.reader.add(starts)

    def restart(self, starts: dict[TopicPartition, int]) -> None:
        self.reader.restart(starts)

    async def fetch(self, timeout_ms: int = 500) -> list[Entry]:
        return [self.entry(record) for record in await self.reader.fetch(timeout_ms)]

    async def read(self, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int]) -> AsyncIterator[Entry]:
        async for record in self.reader.read(starts, ends):
            yield self.entry(record)

    def entry(self, r: ConsumerRecord) -> Entry:
        return to_entry(self.codec, r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, r.headers)


async def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def connect_postgres(config: Config, role: str) -> asyncpg.Connection:
    """As `role` (connectors/pg_roles.py says who may do what), with its password from the
    credentials file: the operator running the console must be able to read that file."""
    try:
        return await connect(config, role, timeout=10)
    except ConfigError as exc:
        raise ConsoleError(str(exc)) from exc
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise ConsoleError(
            f"cannot reach PostgreSQL at {config.postgres.host}:{config.postgres.port} "
            f"(ENVIRONMENT={config.environment}): {exc}; start it with `make run`"
        ) from exc
