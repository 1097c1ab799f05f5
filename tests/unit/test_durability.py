"""State before outcome for a batch (streams/durability.py), with fakes for the producer,
the tables and the publisher: the order in which things may become durable."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import pytest
from faust.streams import _current_event, current_event

from streams.durability import CURRENT_BATCH, Batch, ChangelogAcks, WrittenLast, release


class Event:
    """Stands in for the faust event a step was handling (weak-referenceable, like faust's)."""

    def __init__(self, partition: int) -> None:
        self.partition = partition


class RecordingTable(dict[str, Any]):
    def __init__(self, name: str, journal: list[str]) -> None:
        super().__init__()
        self.name, self.journal = name, journal

    def __setitem__(self, key: str, value: Any) -> None:
        event = current_event()
        self.journal.append(f"write {self.name} {key}={value} for partition {getattr(event, 'partition', None)}")
        super().__setitem__(key, value)


def journalled(journal: list[str]) -> tuple[Any, Any]:
    async def all_acked() -> None:
        journal.append("acked")

    async def publish(topic: Any, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        journal.append(f"publish {topic} {value.decode()}")

    return all_acked, publish


async def test_a_table_written_last_reaches_its_changelog_only_after_the_other_writes_are_acknowledged() -> None:
    journal: list[str] = []
    wallets = WrittenLast(RecordingTable("wallets", journal))
    movements = RecordingTable("movements", journal)
    batch = Batch()
    token = CURRENT_BATCH.set(batch)
    events = [Event(2), Event(2)]
    try:
        for version, event in enumerate(events, start=31):
            _current_event.set(weakref.ref(event))
            movements[f"m{version}"] = version
            wallets["w"] = version
            assert wallets.get("w") == version  # the batch reads its own held write
            batch.dirty = True
            batch.outbox.append(("wallet.movement_updates", b"w", f"v{version}".encode(), []))
    finally:
        _current_event.set(None)
        CURRENT_BATCH.reset(token)
    assert journal == ["write movements m31=31 for partition 2", "write movements m32=32 for partition 2"]

    await release(batch, *journalled(journal))

    assert journal[2:] == [
        "acked",  # the movement records first
        "write wallets w=32 for partition 2",  # then the wallet, once, with its last value
        "acked",
        "publish wallet.movement_updates v31",  # then the outcomes
        "publish wallet.movement_updates v32",
    ]
    assert wallets.get("w") == 32


async def test_a_batch_without_table_writes_publishes_without_waiting() -> None:
    journal: list[str] = []
    batch = Batch(outbox=[("payment.success", b"p", b"done", [])])
    await release(batch, *journalled(journal))
    assert journal == ["publish payment.success done"]


def test_a_table_written_last_refuses_a_write_outside_a_batch() -> None:
    with pytest.raises(RuntimeError, match="inside an agent's batch"):
        WrittenLast({})["w"] = 1


class FakeProducer:
    def __init__(self) -> None:
        self.buffered: list[asyncio.Future[Any]] = []

    def send_soon(self, fut: asyncio.Future[Any]) -> None:
        self.buffered.append(fut)


async def test_changelog_acks_wait_for_every_write_the_broker_has_not_acknowledged_and_raise_on_a_failed_one() -> None:
    producer, acks = FakeProducer(), ChangelogAcks()
    acks.watch(producer)
    acks.watch(producer)  # every agent of a worker watches the same producer: once is enough
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    producer.send_soon(first)
    producer.send_soon(second)
    assert producer.buffered == [first, second] and acks.unacked == [first, second]

    waiting = asyncio.create_task(acks.all_acked())
    first.set_result("offset 1")
    await asyncio.sleep(0)
    assert not waiting.done()  # the second write is not on the broker yet
    second.set_result("offset 2")
    await asyncio.wait_for(waiting, 1)
    assert acks.unacked == []

    failed = loop.create_future()
    producer.send_soon(failed)
    failed.set_exception(ConnectionError("broker gone"))
    with pytest.raises(ConnectionError):
        await acks.all_acked()
