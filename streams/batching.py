"""Batches of what a stream already holds, without a timer.

faust's `take_events(max, within)` hands a batch over when it is full or when `within` has
passed, so at low load every batch waits the whole `within` (latency on every hop) and an idle
agent wakes every `within` to find nothing (measured: 200 wake-ups a second, 12 % of a core
for an idle payment worker at 5 ms). Here a batch is handed over as soon as the agent's queue
is empty or the batch is full: one event at low load, with no added wait, and under load
whatever arrived while the previous batch was being handled. An idle agent sleeps.

Acknowledgement is faust's: the events of a batch are acknowledged only after the consumer of
the batch is done with it, so at-least-once is kept exactly as with `take_events`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from faust.types import EventT
from mode.utils.aiter import aiter
from mode.utils.futures import notify


def take_available(stream: Any, max_: int) -> AsyncGenerator[list[EventT], None]:
    """Batches of up to `max_` events of `stream` (a faust Stream, private parts used)."""
    batches = _batches(stream, max_)
    stream._active_agens.add(batches)  # closed by the stream on stop, like faust's own takes
    return batches


async def _batches(stream: Any, max_: int) -> AsyncGenerator[list[EventT], None]:
    events: list[EventT] = []
    ready = asyncio.Event()  # hand the batch over now
    consumed = asyncio.Event()
    handing_over: asyncio.Future[None] | None = None
    queue = stream.channel.queue

    async def add(value: Any) -> Any:
        nonlocal handing_over
        try:
            if handing_over is not None:  # a batch is being handled: this event starts the next
                try:
                    await handing_over
                finally:
                    handing_over = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("a batched event has no current_event")
            events.append(event)
            if len(events) >= max_:
                ready.set()
                consumed.clear()
                await stream.wait(consumed)  # never more than max_ in a batch
            elif queue.empty():
                ready.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stream.log.exception("Error adding to batch: %r", exc)
            await stream.crash(exc)
        return value

    acks_were = stream.enable_acks
    stream.enable_acks = False  # acknowledged below, after the batch is handled
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))  # as faust's take_events does
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(ready)
            if not events:
                ready.clear()
                continue
            handing_over = asyncio.get_running_loop().create_future()
            try:
                yield list(events)
            finally:
                for event in events:
                    await stream.ack(event)
                events.clear()
                notify(handing_over)
                ready.clear()
                consumed.set()
    finally:
        stream.enable_acks = acks_were
        stream._processors.remove(add)
