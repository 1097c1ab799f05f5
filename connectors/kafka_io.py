"""Kafka adapters for the REST services: publish commands, wait for their outcomes."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from connectors.avro import Codec, EventDecodeError
from connectors.kafka_security import KafkaAccess
from connectors.log_reader import LogReader
from connectors.tracing import outgoing_headers

log = logging.getLogger(__name__)


class EventPublisher:
    """Idempotent producer (acks=all); keys are aggregate ids, values Avro-encoded events."""

    def __init__(self, access: KafkaAccess, codec: Codec) -> None:
        self.codec = codec
        self.producer = AIOKafkaProducer(**access.aiokafka(), acks="all", enable_idempotence=True, linger_ms=1)

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def publish(
        self, topic: str, key: str, event: dict[str, Any], headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        headers = outgoing_headers() if headers is None else headers
        await self.producer.send_and_wait(topic, self.codec.encode(event), key=key.encode(), headers=headers)


class OutcomeWaiter:
    """Tails outcome topics from their end and resolves waiters by a correlation key.

    Each service instance reads every partition (no group), so whichever instance
    published a command sees its outcome. Register before publishing.
    """

    def __init__(
        self, access: KafkaAccess, topics: list[str], codec: Codec, keys_of: Callable[[dict[str, Any]], list[str]]
    ) -> None:
        self.topics, self.codec, self.keys_of = topics, codec, keys_of
        self.waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = defaultdict(list)
        self.reader = LogReader(access)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.reader.start()
        # The ends are fixed before anyone publishes, so no outcome can slip past.
        if not await self.reader.follow_from_end(self.topics):
            raise RuntimeError(f"topics {self.topics} do not exist; run `make run` (it creates them)")
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.reader.stop()

    def register(self, key: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters[key].append(future)
        return future

    async def wait(self, key: str, future: asyncio.Future[dict[str, Any]], timeout: float) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return None
        finally:
            pending = self.waiters.get(key)
            if pending and future in pending:
                pending.remove(future)
                if not pending:
                    del self.waiters[key]

    async def _run(self) -> None:
        while True:
            for message in await self.reader.fetch(max_records=None):
                if not self.waiters:
                    continue
                try:
                    event = self.codec.decode(message.value)
                except EventDecodeError:
                    continue
                for key in self.keys_of(event):
                    for future in self.waiters.pop(key, []):
                        if not future.done():
                            future.set_result(event)
