"""The writes of a projection batch, held and sent as few statements as PostgreSQL can take.

The appliers write one event at a time (`execute`). Held here, a run of the same statement
goes out at once: an upsert keyed on `id` as ONE set-based statement over arrays
(`INSERT … SELECT … FROM unnest(…) ON CONFLICT`), anything else as one `executemany`.
A set-based statement costs PostgreSQL and the client a fraction of one execution per row,
and needs no privilege beyond the upsert's own (no temporary table, which the projector's
role may not create).

The result is the one of executing the writes one by one, in order:
- the writes are sent table by table, each table's in their order: the views have no foreign
  keys or triggers, so writes to different tables do not interact, and an event that writes
  two tables (a payment's terminal event and its operation) no longer cuts every run to one
  row; a statement whose table is not known keeps everything in order;
- an upsert may not touch one row twice in one statement, so a run is cut into rounds in
  which each id appears once, the k-th write of an id in round k, applied in order; writes
  to different ids do not interact (a conflict on another unique index is an error either
  way, and the projector then applies the batch event by event);
- rows are inserted in the order of the events (`WITH ORDINALITY`), so a serial column
  numbers them as it would have one by one;
- a read sends what is held first, so it sees every write before it.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Sequence
from typing import Any

import asyncpg

# A single write goes out as it is: the set-based form pays off from two rows.
SET_BASED_FROM = 2

_UPSERT_BY_ID = re.compile(
    r"^(?P<head>\s*INSERT INTO\s+\w+\s*\(\s*id\s*,[^)]*\))\s*"
    r"VALUES\s*\((?P<values>\s*\$1\s*(?:,\s*\$\d+\s*)*)\)(?P<rest>\s*ON CONFLICT \(id\).*)$",
    re.DOTALL,
)
_TABLE = re.compile(r"^\s*(?:INSERT INTO|UPDATE)\s+(\w+)", re.IGNORECASE)
_set_forms: dict[str, str | None] = {}


@functools.cache  # the appliers' statements are a handful of constant strings
def table_of(query: str) -> str | None:
    match = _TABLE.match(query)
    return None if match is None else match[1].lower()


def by_table(held: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, tuple[Any, ...]]]:
    """The writes reordered table by table (stable within a table), or as they are when one
    statement's table is not known."""
    tables: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
    for write in held:
        table = table_of(write[0])
        if table is None:
            return held
        tables.setdefault(table, []).append(write)
    return [write for writes in tables.values() for write in writes]


async def set_based_form(conn: asyncpg.Connection, query: str) -> str | None:
    """The upsert rewritten to take each parameter as an array of every row's value; None for
    a statement that is not an `INSERT … (id, …) VALUES ($1, …) ON CONFLICT (id)`."""
    if query not in _set_forms:
        match = _UPSERT_BY_ID.match(query)
        if match is None:
            _set_forms[query] = None
        else:
            types = [t.name for t in (await conn.prepare(query)).get_parameters()]
            columns = ", ".join(f"c{n}" for n in range(1, len(types) + 1))
            arrays = ", ".join(f"${n}::{name}[]" for n, name in enumerate(types, 1))
            values = re.sub(r"\$(\d+)", r"s.c\1", match["values"])
            _set_forms[query] = (
                f"{match['head']} SELECT {values} FROM unnest({arrays}) WITH ORDINALITY AS s({columns}, ord) "
                f"ORDER BY s.ord{match['rest']}"
            )
    return _set_forms[query]


def rounds(rows: Sequence[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    """The rows cut so that an id (the first value) appears once per round, in order."""
    seen: dict[Any, int] = {}
    cut: list[list[tuple[Any, ...]]] = []
    for row in rows:
        k = seen[row[0]] = seen.get(row[0], -1) + 1
        if k == len(cut):
            cut.append([])
        cut[k].append(row)
    return cut


class BatchedWrites:
    """Stands in for the connection while the appliers of a batch run (see the module)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.held: list[tuple[str, tuple[Any, ...]]] = []

    async def execute(self, query: str, *args: Any) -> None:
        self.held.append((query, args))

    async def flush(self) -> None:
        for query, run in itertools.groupby(by_table(self.held), key=lambda held: held[0]):
            rows = [args for _, args in run]
            set_form = await set_based_form(self.conn, query) if len(rows) >= SET_BASED_FROM else None
            if set_form is None:
                await self.conn.executemany(query, rows)
                continue
            for round_rows in rounds(rows):
                await self.conn.execute(set_form, *zip(*round_rows, strict=True))
        self.held.clear()

    async def fetchval(self, query: str, *args: Any) -> Any:
        await self.flush()
        return await self.conn.fetchval(query, *args)
