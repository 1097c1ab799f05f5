"""The projector's writes go out as one statement per run of the same statement, in order: an upsert
keyed on id as one set-based statement per round, anything else as one executemany."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from connectors.batched_writes import _UPSERT_BY_ID, BatchedWrites, rounds


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


class FakeStatement:
    def get_parameters(self) -> list[Any]:
        return [SimpleNamespace(name="uuid"), SimpleNamespace(name="int8"), SimpleNamespace(name="timestamptz")]


class PreparingConnection(RecordingConnection):
    async def prepare(self, query: str) -> FakeStatement:
        return FakeStatement()

    async def execute(self, query: str, *args: Any) -> None:
        self.calls.append(("execute " + query, args))


UPSERT = """INSERT INTO things (id, version, at, seen_at) VALUES ($1, $2, $3, $3)
    ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version WHERE things.version < EXCLUDED.version"""


def test_an_id_appears_once_per_round_and_rounds_keep_the_order_of_its_writes() -> None:
    rows = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("a", 3), ("b", 2)]
    assert rounds(rows) == [[("a", 1), ("b", 1), ("c", 1)], [("a", 2), ("b", 2)], [("a", 3)]]


async def test_a_run_of_an_upsert_goes_out_as_one_statement_over_arrays_per_round() -> None:
    conn = PreparingConnection()
    writes = BatchedWrites(conn)  # type: ignore[arg-type]
    for args in (("a", 1, "t1"), ("b", 1, "t2"), ("a", 2, "t3")):
        await writes.execute(UPSERT, *args)
    await writes.execute(UPSERT + " ", "c", 9, "t4")  # alone: sent as it is
    await writes.flush()
    set_form = (
        "INSERT INTO things (id, version, at, seen_at) SELECT s.c1, s.c2, s.c3, s.c3 "
        "FROM unnest($1::uuid[], $2::int8[], $3::timestamptz[]) WITH ORDINALITY AS s(c1, c2, c3, ord) "
        "ORDER BY s.ord\n    ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version "
        "WHERE things.version < EXCLUDED.version"
    )
    assert conn.calls == [
        ("execute " + set_form, (("a", "b"), (1, 1), ("t1", "t2"))),
        ("execute " + set_form, (("a",), (2,), ("t3",))),
        ("executemany " + UPSERT + " ", [("c", 9, "t4")]),
    ]


def test_only_an_upsert_keyed_on_id_has_a_set_form() -> None:
    assert _UPSERT_BY_ID.match(UPSERT)
    assert not _UPSERT_BY_ID.match("UPDATE things SET version = $2 WHERE id = $1")
    assert not _UPSERT_BY_ID.match("INSERT INTO things (name, id) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
    assert not _UPSERT_BY_ID.match("INSERT INTO things (id, n) VALUES ($1, $2) ON CONFLICT (id, n) DO NOTHING")


async def test_writes_to_two_tables_are_sent_table_by_table_each_in_its_order() -> None:
    # A payment's terminal event writes its row and its operation's: interleaved, every run was one row.
    conn = RecordingConnection()
    writes = BatchedWrites(conn)  # type: ignore[arg-type]
    for n in (1, 2, 3):
        await writes.execute("INSERT INTO payments (id) VALUES ($1)", n)
        await writes.execute("INSERT INTO payment_operations (id) VALUES ($1)", n)
    await writes.execute("UPDATE payments SET x = 1 WHERE id = $1", 1)
    await writes.execute("INSERT INTO payments (id) VALUES ($1)", 4)
    await writes.flush()
    assert conn.calls == [
        ("executemany INSERT INTO payments (id) VALUES ($1)", [(1,), (2,), (3,)]),
        ("executemany UPDATE payments SET x = 1 WHERE id = $1", [(1,)]),
        ("executemany INSERT INTO payments (id) VALUES ($1)", [(4,)]),
        ("executemany INSERT INTO payment_operations (id) VALUES ($1)", [(1,), (2,), (3,)]),
    ]


async def test_a_statement_of_no_known_table_keeps_every_write_in_its_order() -> None:
    conn = RecordingConnection()
    writes = BatchedWrites(conn)  # type: ignore[arg-type]
    await writes.execute("INSERT INTO a (id) VALUES ($1)", 1)
    await writes.execute("SELECT touch_b($1)", 2)
    await writes.execute("INSERT INTO a (id) VALUES ($1)", 3)
    await writes.flush()
    assert [rows for _, rows in conn.calls] == [[(1,)], [(2,)], [(3,)]]
