"""Kafka adapters for the REST services: publish commands, wait for their outcomes."""

from __future__ import annotations

import asyncio
import logging
import time
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

    With nobody waiting for `idle_after_s` it stops fetching: the wallet API would otherwise
    read every wallet outcome of every payment (half a millisecond of CPU a payment) to answer
    commands that do not come. The next registration moves it to the ends as they are then,
    before its command is published, so no outcome it waits for can be behind it.
    """

    def __init__(
        self,
        access: KafkaAccess,
        topics: list[str],
        codec: Codec,
        keys_of: Callable[[dict[str, Any]], list[str]],
        idle_after_s: float = 5.0,
    ) -> None:
        self.topics, self.codec, self.keys_of = topics, codec, keys_of
        self.waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = defaultdict(list)
        self.reader = LogReader(access)
        self.task: asyncio.Task[None] | None = None
        self.idle_after_s = idle_after_s
        self.last_wanted = time.monotonic()
        self.following = asyncio.Event()
        self._resuming = asyncio.Lock()
        self.tps: list[Any] = []

    async def start(self) -> None:
        await self.reader.start()
        # The ends are fixed before anyone publishes, so no outcome can slip past.
        self.tps = await self.reader.follow_from_end(self.topics)
        if not self.tps:
            raise RuntimeError(f"topics {self.topics} do not exist; run `make run` (it creates them)")
        self.following.set()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.reader.stop()

    async def register(self, key: str) -> asyncio.Future[dict[str, Any]]:
        """A future for `key`'s outcome; returns once the tail is sure to see it."""
        self.last_wanted = time.monotonic()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters[key].append(future)
        if not self.following.is_set():
            await self._resume()
        return future

    async def _resume(self) -> None:
        async with self._resuming:
            if self.following.is_set():
                return
            self.reader.add(await self.reader.ends(self.tps))
            self.reader.consumer.resume(*self.tps)
            self.following.set()

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
            await self.following.wait()
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
            if not self.waiters and time.monotonic() - self.last_wanted > self.idle_after_s:
                self.reader.consumer.pause(*self.tps)
                self.following.clear()
