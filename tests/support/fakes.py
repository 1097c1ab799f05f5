"""Fakes for the ports a saga step is given (streams.ports): a table that is a dict, a sender
that keeps what it was asked to publish, a durability barrier that counts its calls. They
share one journal, so a test can check the order: state, durable, then publish."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Journal:
    entries: list[tuple[str, Any]] = field(default_factory=list)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.entries]


class FakeTable(dict[str, Any]):
    def __init__(self, journal: Journal, name: str) -> None:
        super().__init__()
        self.journal, self.name = journal, name

    def __setitem__(self, key: str, value: Any) -> None:
        self.journal.entries.append((f"write {self.name}", key))
        super().__setitem__(key, value)


@dataclass
class FakeSender:
    journal: Journal
    sent: list[tuple[str, bytes | None, dict[str, Any]]] = field(default_factory=list)

    async def __call__(self, topic: str, key: bytes | None, record: dict[str, Any]) -> None:
        self.journal.entries.append(("send", topic))
        self.sent.append((topic, key, record))

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [record for sent_to, _, record in self.sent if sent_to == topic]


@dataclass
class FakeDurable:
    journal: Journal
    calls: int = 0

    async def __call__(self) -> None:
        self.calls += 1
        self.journal.entries.append(("durable", None))
