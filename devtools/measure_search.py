"""How fast the payment search's queries are on a large table, without touching the views:
a side copy of `payments` (with its indexes) in a schema of its own, filled with synthetic
rows as `payments_owner`, timed, then dropped.

    python -m devtools.measure_search [--rows 200000] [--users 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from connectors.config import load_config
from connectors.credentials import PG_OWNER
from connectors.postgres import connect

SCHEMA = "measure_search"
USER = "00000000-0000-4000-8000-000000000042"
PAGE = "ORDER BY created_at DESC, id DESC LIMIT 21"
CASES: dict[str, tuple[str, list[Any]]] = {
    "everyone, first page": ("", []),
    "one user": ("WHERE user_id = $1", [USER]),
    "status=failed": ("WHERE status = $1", ["failed"]),
    "status matching none": ("WHERE status = $1", ["refunded"]),
    "one user, last 7 days": ("WHERE user_id = $1 AND created_at >= now() - interval '7 days'", [USER]),
}


async def timed(conn: Any, sql: str, args: list[Any], runs: int = 20) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await conn.fetch(sql, *args)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return times[runs // 2], times[-1]


async def measure(rows: int, users: int) -> None:
    conn = await connect(load_config(), PG_OWNER)
    try:
        await conn.execute(
            f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}; SET search_path = {SCHEMA}"
        )
        await conn.execute("CREATE TABLE payments (LIKE public.payments INCLUDING ALL)")
        await conn.execute(
            "INSERT INTO payments SELECT gen_random_uuid(), "
            "('00000000-0000-4000-8000-' || lpad((i % $2)::text, 12, '0'))::uuid, 100, 'USD', "
            "CASE WHEN i % 3 = 0 THEN 'external' ELSE 'wallet' END, NULL, "
            "CASE WHEN i % 3 = 0 THEN 'simulator' END, NULL, "
            "CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'completed' END, 2, NULL, NULL, 0, "
            "now() - make_interval(secs => i * 13), now() FROM generate_series(1, $1) i",
            rows,
            users,
        )
        await conn.execute("ANALYZE payments")
        print(f"{rows} payments of {users} users; median and slowest of 20, asyncpg round trip included")
        for name, (where, args) in CASES.items():
            median, slowest = await timed(conn, f"SELECT * FROM payments {where} {PAGE}", args)
            print(f"{name:<28}{median:8.2f} ms {slowest:8.2f} ms")
        deep = await conn.fetchrow(f"SELECT created_at, id FROM payments {PAGE[:-9]} OFFSET $1 LIMIT 1", rows * 3 // 4)
        sql = f"SELECT * FROM payments WHERE (created_at, id) < ($1, $2) {PAGE}"
        median, slowest = await timed(conn, sql, [deep["created_at"], deep["id"]])
        print(f"{'a page 3/4 of the way in':<28}{median:8.2f} ms {slowest:8.2f} ms")
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.measure_search", description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=2_000)
    args = parser.parse_args()
    asyncio.run(measure(args.rows, args.users))


if __name__ == "__main__":
    main()
