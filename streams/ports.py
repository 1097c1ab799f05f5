"""What a saga step is given, so that a unit test can hand it fakes: a table to read and write
its aggregate's state, a sender to publish records, and a barrier that returns once the
table writes so far are durable (see `streams.app.Pipeline.durable`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

Sender = Callable[[str, bytes | None, dict[str, Any]], Awaitable[None]]
Durable = Callable[[], Awaitable[None]]


class Table(Protocol):
    """The part of a faust table a step uses: values are plain dicts, keys aggregate ids."""

    def get(self, key: str) -> Any: ...

    def __setitem__(self, key: str, value: Any) -> None: ...

    def items(self) -> Iterable[tuple[str, Any]]: ...


class DeletableTable(Table, Protocol):
    """A table whose rows can be removed (a tombstone on its changelog)."""

    def __delitem__(self, key: str) -> None: ...
