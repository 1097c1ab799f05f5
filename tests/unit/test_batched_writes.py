"""The projector's writes go out as one executemany per run of the same statement, in order."""

from __future__ import annotations

from typing import Any

from connectors.projections import BatchedWrites


class RecordingConnection:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def executemany(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        self.calls.append(("executemany " + query, rows))

    async def fetchval(self, query: str, *args: Any) -> Any:
        self.calls.append(("fetchval " + query, args))
        return True


async def test_runs_of_one_statement_are_sent_together_and_a_read_sees_every_write_before_it() -> None:
    conn = RecordingConnection()
    writes = BatchedWrites(conn)  # type: ignore[arg-type]
    await writes.execute("INSERT a", 1)
    await writes.execute("INSERT a", 2)
    await writes.execute("UPDATE b", 3)
    assert conn.calls == []  # nothing sent yet
    assert await writes.fetchval("SELECT c", 4) is True
    await writes.execute("INSERT a", 5)
    await writes.flush()
    assert conn.calls == [
        ("executemany INSERT a", [(1,), (2,)]),
        ("executemany UPDATE b", [(3,)]),
        ("fetchval SELECT c", (4,)),
        ("executemany INSERT a", [(5,)]),
    ]
