"""Batches of what an agent's queue holds: at once when the load is low, left to fill under load."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from streams.batching import take_available


class Channel:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def __aiter__(self) -> Channel:
        return self


class FakeStream:
    """The parts of a faust Stream that take_available uses; events are delivered by calling
    the processor it adds, as the stream does for each event it reads."""

    def __init__(self) -> None:
        self.channel = Channel()
        self.current_event: Any = None
        self.enable_acks = True
        self.should_stop = False
        self.log = logging.getLogger("test")
        self.acked: list[Any] = []
        self._processors: list[Any] = []
        self._active_agens: set[Any] = set()

    def add_processor(self, processor: Any) -> None:
        self._processors.append(processor)

    def _enable_passive(self, channel: Any) -> None:
        pass

    async def wait(self, event: asyncio.Event) -> None:
        await event.wait()

    async def wait_for_stopped(self, event: asyncio.Event) -> None:
        await event.wait()

    async def ack(self, event: Any) -> None:
        self.acked.append(event)

    async def crash(self, exc: BaseException) -> None:
        raise exc

    async def deliver(self, event: Any, more_queued: bool = False) -> None:
        if more_queued:
            self.channel.queue.put_nowait(object())
        self.current_event = event
        await self._processors[0](event)
        if more_queued:
            self.channel.queue.get_nowait()


async def run(fill_wait_s: float, fill_from: int, script: Any) -> list[tuple[float, list[Any]]]:
    stream = FakeStream()
    loop = asyncio.get_running_loop()
    handed: list[tuple[float, list[Any]]] = []

    async def take() -> None:
        async for batch in take_available(stream, 100, fill_wait_s, fill_from):
            handed.append((loop.time(), batch))

    taking = asyncio.create_task(take())
    await asyncio.sleep(0)  # the processor is added once the generator starts
    started = loop.time()
    await script(stream)
    await asyncio.sleep(0.01)
    taking.cancel()
    return [(round(at - started, 2), batch) for at, batch in handed]


async def test_at_low_load_a_batch_is_handed_over_as_soon_as_the_queue_is_empty() -> None:
    async def script(stream: FakeStream) -> None:
        for n in range(3):
            await stream.deliver(n)
            await asyncio.sleep(0.01)

    handed = await run(0.2, 2, script)
    assert [batch for _, batch in handed] == [[0], [1], [2]]
    assert all(at < 0.1 for at, _ in handed)  # none waited the 0.2 s


async def test_after_a_large_batch_the_next_waits_to_fill_and_then_the_load_decides_again() -> None:
    wait = 0.3
    arrived: dict[str, float] = {}

    async def deliver(stream: FakeStream, name: str, more_queued: bool = False) -> None:
        arrived[name] = asyncio.get_running_loop().time()
        await stream.deliver(name, more_queued)

    async def script(stream: FakeStream) -> None:
        await deliver(stream, "a", more_queued=True)
        await deliver(stream, "b")  # the queue is empty: [a, b] at once (no batch before)
        await asyncio.sleep(0.01)
        await deliver(stream, "c")  # after a batch of 2: left to fill
        await asyncio.sleep(0.03)
        await deliver(stream, "d")
        await asyncio.sleep(wait + 0.1)
        await deliver(stream, "e")  # after [c, d], a batch of 2 again: waits
        await asyncio.sleep(wait + 0.1)
        await deliver(stream, "f")  # after [e], a batch of 1: at once

    loop = asyncio.get_running_loop()
    started = loop.time()
    handed = await run(wait, 2, script)
    assert [batch for _, batch in handed] == [["a", "b"], ["c", "d"], ["e"], ["f"]]
    at = {batch[0]: started + t for t, batch in handed}
    assert at["a"] - arrived["b"] < wait
    assert wait - 0.02 <= at["c"] - arrived["c"] < wait + 0.2  # handed over with d in it
    assert at["e"] - arrived["e"] >= wait - 0.02
    assert at["f"] - arrived["f"] < wait  # the batch before held one event: no wait
