"""State before outcome, for a whole batch: how a worker's table writes become durable
before what they decided is published.

Two facts about the parts make this more than a producer flush:
- faust sends table writes through its producer buffer, and that buffer's flush returns after
  a 0.1 s stall with writes still queued (`ProducerBuffer.flush_atmost`). So what is waited on
  is each write's own future, which resolves when the broker has acknowledged the record
  (`ChangelogAcks`).
- Two tables are two changelog topics, and a producer keeps no order between partitions: a
  SIGKILL in the middle of a flush can keep any subset of the batch's writes. A write that must
  never be durable without another (a wallet's new version without the movement record that
  explains it) is held to the end of the batch and sent only once the rest are acknowledged
  (`WrittenLast`). Seen in CI: the wallet's version survived, its movement record did not, and
  the redelivered command was decided a second time on a balance that already held it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from faust.streams import _current_event, current_event

Publish = Callable[[Any, bytes | None, bytes, list[tuple[str, bytes]]], Awaitable[Any]]


@dataclass
class Batch:
    """What the steps of one batch publish, held until the batch's table writes are durable."""

    outbox: list[tuple[Any, bytes | None, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)
    dirty: bool = False  # a step wrote a table: its changelog records must be acknowledged first
    # (id(table), key) -> (table, key, value, the event it was decided for): see WrittenLast.
    written_last: dict[tuple[int, str], tuple[Any, str, Any, Any]] = field(default_factory=dict)


CURRENT_BATCH: ContextVar[Batch | None] = ContextVar("current_batch", default=None)


class ChangelogAcks:
    """Every table write's changelog record, until the broker has acknowledged it."""

    def __init__(self) -> None:
        self.unacked: list[asyncio.Future[Any]] = []
        self._watched: Any = None

    def watch(self, producer: Any) -> None:
        """Table writes reach the producer through `send_soon`; keep each one's future."""
        if self._watched is producer:
            return
        send_soon = producer.send_soon

        def tracked(fut: asyncio.Future[Any]) -> None:
            self.unacked.append(fut)
            send_soon(fut)

        producer.send_soon = tracked
        self._watched = producer

    async def all_acked(self) -> None:
        """Returns once every write so far is on the broker; raises if one could not be written."""
        while self.unacked:
            waiting, self.unacked = self.unacked, []
            await asyncio.gather(*waiting)


class WrittenLast:
    """A table whose writes in a batch reach its changelog only after the batch's other table
    writes are acknowledged. Reads inside the batch see them at once."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: str) -> Any:
        batch = CURRENT_BATCH.get()
        held = batch.written_last.get((id(self.table), key)) if batch is not None else None
        return held[2] if held is not None else self.table.get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        batch = CURRENT_BATCH.get()
        if batch is None:
            raise RuntimeError("a WrittenLast table is written only inside an agent's batch")
        batch.written_last[(id(self.table), key)] = (self.table, key, value, current_event())

    def items(self) -> Iterable[tuple[str, Any]]:
        return self.table.items()


async def release(batch: Batch, all_acked: Callable[[], Awaitable[None]], publish: Publish) -> None:
    """The batch's table writes acknowledged, then the writes held to the end (the last value
    of each key, written for the event that decided it) acknowledged, then the outbox."""
    if batch.dirty or batch.written_last:
        await all_acked()
    if batch.written_last:
        try:
            for table, table_key, value, event in batch.written_last.values():
                # The changelog partition is the source partition of the event that decided it.
                _current_event.set(weakref.ref(event) if event is not None else None)
                table[table_key] = value
        finally:
            _current_event.set(None)
        await all_acked()
    for topic, key, value, headers in batch.outbox:
        await publish(topic, key, value, headers)
