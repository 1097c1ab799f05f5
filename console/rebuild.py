"""payments rebuild: rebuild the PostgreSQL views from the log into a side schema and compare
them with the live views; the live views are never touched."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import asyncpg
from aiokafka import TopicPartition

from connectors.avro import EventDecodeError
from connectors.config import Config
from connectors.credentials import PG_OWNER
from connectors.projections import VIEW_TABLES, Projection, ProjectionNotReady
from console.sources import ConsoleError, Log, connect_postgres


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class TableDiff:
    table: str
    live_count: int
    rebuilt_count: int
    lines: list[str]


def diff_rows(
    table: str, pk: Sequence[str], only_live: Sequence[dict[str, Any]], only_rebuilt: Sequence[dict[str, Any]]
) -> list[str]:
    """Rows that are not in both tables, matched on the primary key."""

    def key_of(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[c] for c in pk)

    def name(row: dict[str, Any]) -> str:
        return f"{table} " + ", ".join(f"{c}={row[c]}" for c in pk)

    live = {key_of(r): r for r in only_live}
    rebuilt = {key_of(r): r for r in only_rebuilt}
    lines = []
    for k in sorted(set(live) | set(rebuilt), key=str):
        if k in live and k in rebuilt:
            changed = [
                f"{c}: live={live[k][c]!r} rebuilt={rebuilt[k][c]!r}" for c in live[k] if live[k][c] != rebuilt[k][c]
            ]
            lines.append(f"{name(live[k])} differs: " + "; ".join(changed))
        elif k in live:
            lines.append(f"{name(live[k])} is in the live view but not in the log's rebuild")
        else:
            lines.append(f"{name(rebuilt[k])} is in the rebuild but missing from the live view")
    return lines


async def compare_table(conn: asyncpg.Connection, schema: str, table: str) -> TableDiff:
    columns = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 "
        "AND coalesce(column_default, '') NOT LIKE 'nextval(%' AND is_identity = 'NO' ORDER BY ordinal_position",
        table,
    )
    pk = [
        r["attname"]
        for r in await conn.fetch(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary",
            f"public.{quote(table)}",
        )
    ]
    cols = ", ".join(quote(r["column_name"]) for r in columns)
    live, rebuilt = f"public.{quote(table)}", f"{quote(schema)}.{quote(table)}"
    only_live = [
        dict(r) for r in await conn.fetch(f"SELECT {cols} FROM {live} EXCEPT ALL SELECT {cols} FROM {rebuilt}")
    ]
    only_rebuilt = [
        dict(r) for r in await conn.fetch(f"SELECT {cols} FROM {rebuilt} EXCEPT ALL SELECT {cols} FROM {live}")
    ]
    return TableDiff(
        table,
        await conn.fetchval(f"SELECT count(*) FROM {live}"),
        await conn.fetchval(f"SELECT count(*) FROM {rebuilt}"),
        diff_rows(table, pk or [r["column_name"] for r in columns], only_live, only_rebuilt),
    )


async def create_rebuild_schema(conn: asyncpg.Connection, schema: str, tables: Iterable[str]) -> None:
    await conn.execute(f"CREATE SCHEMA {quote(schema)}")
    # Its own offsets table too: the rebuild must never move the live projector's positions.
    for table in ("projection_offsets", *tables):
        if await conn.fetchval("SELECT to_regclass($1)", f"public.{table}") is None:
            raise ConsoleError(f"table public.{table} does not exist: run `make run` (it applies the migrations)")
        target = f"{quote(schema)}.{quote(table)}"
        # Unlogged, and with only the indexes that can refuse a row (unique ones, the primary key
        # the upserts' ON CONFLICT needs): the copy is thrown away after the comparison, so it
        # needs no WAL, and lookup indexes would only slow every insert down.
        await conn.execute(f"CREATE UNLOGGED TABLE {target} (LIKE public.{quote(table)} INCLUDING ALL)")
        lookups = await conn.fetch(
            "SELECT i.indexrelid::regclass::text AS name FROM pg_index i WHERE i.indrelid = $1::regclass "
            "AND NOT i.indisunique",
            target,
        )
        for row in lookups:
            await conn.execute(f"DROP INDEX {row['name']}")
        # LIKE copies nextval() defaults that point at the LIVE sequence; give the copy its own.
        serials = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 "
            "AND column_default LIKE 'nextval(%'",
            schema,
            table,
        )
        for row in serials:
            seq = f"{quote(schema)}.{quote(table + '_' + row['column_name'] + '_seq')}"
            column = quote(row["column_name"])
            await conn.execute(f"CREATE SEQUENCE {seq} OWNED BY {target}.{column}")
            await conn.execute(f"ALTER TABLE {target} ALTER COLUMN {column} SET DEFAULT nextval('{seq}')")


# What the live projector dead-letters rather than stores: the rebuild skips the same events
# (a ProjectionNotReady here means the cause is nowhere on the log).
REFUSED = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    ProjectionNotReady,
    UnicodeError,
    ValueError,
    KeyError,
)


# Messages applied per transaction, across the partitions of a topic: large enough that
# statements and round trips stop mattering, small enough to keep memory flat (~20 MB).
BATCH = 20_000
PROGRESS_EVERY_S = 2.0


@dataclass
class Progress:
    """How far the whole rebuild is: every projection's messages, with a rate and an estimated end."""

    total: int
    out: TextIO
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    reported: float = field(default_factory=time.monotonic)

    def add(self, messages: int) -> None:
        self.done += messages
        if time.monotonic() - self.reported >= PROGRESS_EVERY_S:
            self.reported = time.monotonic()
            left = f", about {(self.total - self.done) / self.rate():,.0f} s left" if self.rate() > 0 else ""
            print(
                f"[rebuild] {self.done:,}/{self.total:,} messages, {self.rate():,.0f}/s{left}",
                file=self.out,
                flush=True,
            )

    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-6)


Batch = dict[tuple[str, int], list[tuple[int, Any]]]


class Rebuilder:
    """Applies a projection's topics into the side schema, remembering how far it got.

    Reading and decoding the next batch overlaps with PostgreSQL applying the previous one."""

    def __init__(self, log: Log, conn: asyncpg.Connection, schema: str, out: TextIO) -> None:
        self.log, self.conn, self.schema, self.out = log, conn, schema, out
        self.reached: dict[tuple[str, TopicPartition], int] = {}
        self.progress = Progress(0, out)

    def starts(self, projection: Projection, targets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        return {tp: self.reached.get((projection.name, tp), 0) for tp in targets}

    async def advance(self, projection: Projection, targets: dict[TopicPartition, int]) -> None:
        # Topic by topic in the projection's order (causes before effects: a payment's
        # creation before its refund), as an applier may need the row an earlier topic made.
        started, before = time.monotonic(), self.progress.done
        for topic in projection.topics:
            await self._advance(projection, {tp: end for tp, end in targets.items() if tp.topic == topic})
        done, elapsed = self.progress.done - before, time.monotonic() - started
        if done:
            print(
                f"[rebuild] {projection.name}: {done:,} messages applied in {elapsed:.1f} s "
                f"({done / max(elapsed, 1e-6):,.0f}/s)",
                file=self.out,
                flush=True,
            )

    async def _advance(self, projection: Projection, targets: dict[TopicPartition, int]) -> None:
        starts = self.starts(projection, targets)
        if all(targets[tp] <= starts[tp] for tp in targets):
            return
        batches: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=1)
        reading = asyncio.create_task(self._read(starts, targets, batches))
        try:
            while (batch := await batches.get()) is not None:
                await self._flush(projection, batch)
                self.progress.add(sum(len(messages) for messages in batch.values()))
            await reading
        finally:
            reading.cancel()
        for tp in targets:
            self.reached[(projection.name, tp)] = max(targets[tp], starts[tp])

    async def _read(
        self, starts: dict[TopicPartition, int], targets: dict[TopicPartition, int], out: asyncio.Queue[Batch | None]
    ) -> None:
        """Decoded messages in batches of BATCH, each decoded once, then None."""
        codec, size = self.log.codec, 0
        batch: Batch = {}
        async for record in self.log.reader.read(starts, targets):
            try:
                event = codec.decode(record.value or b"")
            except EventDecodeError:
                event = None  # the live projector skips it too
            batch.setdefault((record.topic, record.partition), []).append((record.offset, event))
            size += 1
            if size >= BATCH:
                await out.put(batch)
                batch, size = {}, 0
        if batch:
            await out.put(batch)
        await out.put(None)

    async def _flush(self, projection: Projection, batch: Batch) -> None:
        try:
            await projection.apply_batches(self.conn, batch, schema=self.schema)
            return
        except REFUSED:
            pass
        # An event PostgreSQL refuses: the live projector dead-lettered it, the rebuild skips it
        # too. Found by applying the batch event by event.
        for (topic, partition), messages in batch.items():
            for offset, event in messages:
                try:
                    await projection.apply_batch(self.conn, topic, partition, [(offset, event)], self.schema)
                except REFUSED as exc:
                    print(
                        f"[rebuild] {projection.name}: skipped {topic}[{partition}]@{offset}, refused: "
                        f"{type(exc).__name__}: {exc}",
                        file=self.out,
                        flush=True,
                    )
                    await projection.apply_batch(self.conn, topic, partition, [(offset, None)], self.schema)


async def live_next_offsets(conn: asyncpg.Connection, projection: Projection) -> dict[TopicPartition, int]:
    return {TopicPartition(t, p): last + 1 for (t, p), last in (await projection.positions(conn)).items()}


LIVE_PROJECTOR_NOTE = (
    "the live projector need not be stopped: the rebuild writes only its own schema; while the projector "
    "runs, the two share the CPU and PostgreSQL (a projector catching up slows the rebuild), and the "
    "comparison waits for it to reach the offsets the rebuild reached"
)


async def rebuild(config: Config, compare_only: bool, keep: bool, wait_s: float, out: TextIO) -> int:
    from services.projector import PROJECTIONS

    missing = [p.name for p in PROJECTIONS if p.name not in VIEW_TABLES]
    if missing:
        raise ConsoleError(f"connectors/projections.VIEW_TABLES does not list the tables of {missing}")
    schema = "rebuild_" + dt.datetime.now(dt.UTC).strftime("%Y%m%d_%H%M%S")
    # As the owner: the rebuild creates (and drops) a schema of its own, which the read-only
    # console role may not; it writes only there and reads the live views.
    conn = await connect_postgres(config, PG_OWNER)
    try:
        async with Log(config) as log:
            await create_rebuild_schema(conn, schema, [t for p in PROJECTIONS for t in VIEW_TABLES[p.name]])
            print(f"[rebuild] into schema {schema}; {LIVE_PROJECTOR_NOTE}", file=out, flush=True)
            rebuilder = Rebuilder(log, conn, schema, out)
            targets: dict[str, dict[TopicPartition, int]] = {}
            for projection in PROJECTIONS:
                tps = [TopicPartition(t, p) for t in projection.topics for p in log.partitions(t)]
                targets[projection.name] = await log.ends(tps)
            rebuilder.progress.total = sum(sum(ends.values()) for ends in targets.values())
            for projection in PROJECTIONS:
                await rebuilder.advance(projection, targets[projection.name])
            progress = rebuilder.progress
            print(
                f"[rebuild] rebuilt from {progress.done:,} messages in {time.monotonic() - progress.started:.1f} s: "
                f"{progress.rate():,.0f} messages/s",
                file=out,
                flush=True,
            )
            differences = await _compare_when_caught_up(conn, rebuilder, PROJECTIONS, targets, schema, wait_s, out)
    finally:
        if keep:
            print(f"[rebuild] kept schema {schema} (drop it with: DROP SCHEMA {schema} CASCADE)", file=out)
        else:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE")
        await conn.close()
    del compare_only  # the rebuild only ever writes its own schema, so comparing is all it can do to the views
    return 1 if differences else 0


async def _compare_when_caught_up(
    conn: asyncpg.Connection,
    rebuilder: Rebuilder,
    projections: Sequence[Projection],
    targets: dict[str, dict[TopicPartition, int]],
    schema: str,
    wait_s: float,
    out: TextIO,
) -> int:
    deadline = time.monotonic() + wait_s
    for projection in projections:
        while True:
            live = await live_next_offsets(conn, projection)
            behind = {tp: end for tp, end in targets[projection.name].items() if end > 0 and live.get(tp, 0) < end}
            if not behind:
                break
            if time.monotonic() > deadline:
                lag = ", ".join(f"{tp.topic}[{tp.partition}] at {live.get(tp, 0)}/{end}" for tp, end in behind.items())
                raise ConsoleError(
                    f"the live projector has not reached the log's end after {wait_s:.0f} s ({lag}): "
                    "is it running? see `make status` / `make logs NAME=projector`"
                )
            await asyncio.sleep(0.2)
    # The live views keep moving: compare inside one snapshot that also holds the live
    # offsets, and first bring the rebuild up to whatever those offsets say.
    for _ in range(10):
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            ahead = {}
            for projection in projections:
                live = await live_next_offsets(conn, projection)
                more = {tp: o for tp, o in live.items() if o > rebuilder.reached.get((projection.name, tp), 0)}
                if more:
                    ahead[projection.name] = more
            if not ahead:
                return await _report(conn, projections, schema, out)
        for projection in projections:
            if projection.name in ahead:
                await rebuilder.advance(projection, ahead[projection.name])
    raise ConsoleError("the live views kept changing faster than the rebuild caught up: run rebuild again when quieter")


async def _report(conn: asyncpg.Connection, projections: Sequence[Projection], schema: str, out: TextIO) -> int:
    differences = 0
    for projection in projections:
        for table in VIEW_TABLES[projection.name]:
            diff = await compare_table(conn, schema, table)
            same = not diff.lines and diff.live_count == diff.rebuilt_count
            verdict_text = "no difference" if same else f"{len(diff.lines)} differing row(s)"
            print(f"{table}: live {diff.live_count} rows, rebuilt {diff.rebuilt_count} rows: {verdict_text}", file=out)
            for line in diff.lines[:50]:
                print(f"    {line}", file=out)
            if len(diff.lines) > 50:
                print(f"    ... and {len(diff.lines) - 50} more", file=out)
            differences += 0 if same else max(1, len(diff.lines))
    print(
        "no difference: the views equal a rebuild from the log"
        if not differences
        else f"{differences} difference(s) between the views and the log",
        file=out,
    )
    return differences
