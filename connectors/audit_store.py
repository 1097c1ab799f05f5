"""The money auditor's store in PostgreSQL (as the `auditor` role): its checkpoint, one row of
open state plus the offsets it covers, the payments it judged and let go of, and every wallet's
running figures. A checkpoint is one transaction: the state, its offsets, the payments judged
and the wallets changed since the last one, or none."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from connectors.config import Config
from connectors.pg_roles import AUDITOR
from connectors.postgres import create_pool

NAME = "money-auditor"


@dataclass(frozen=True)
class Checkpoint:
    epoch: int
    offsets: dict[str, int]  # "topic/partition" -> next offset to read
    state: dict[str, Any]
    written_at: datetime


class AuditStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, config: Config) -> AuditStore:
        # Two connections: a checkpoint being written does not hold up reading judged payments back.
        return cls(await create_pool(config, AUDITOR, min_size=1, max_size=2))

    async def close(self) -> None:
        await self.pool.close()

    async def checkpoint(self) -> Checkpoint | None:
        row = await self.pool.fetchrow(
            "SELECT epoch, offsets::text, state::text, written_at FROM auditor_checkpoint WHERE auditor = $1", NAME
        )
        if row is None:
            return None
        return Checkpoint(row["epoch"], json.loads(row["offsets"]), json.loads(row["state"]), row["written_at"])

    async def epoch(self) -> int:
        """The epoch of the checkpoint there is, 0 without one (a re-audit from the start takes the next)."""
        return int(await self.pool.fetchval("SELECT epoch FROM auditor_checkpoint WHERE auditor = $1", NAME) or 0)

    async def write(
        self,
        epoch: int,
        offsets: dict[str, int],
        state: dict[str, Any],
        judged: dict[str, dict[str, Any]],
        wallets: dict[str, dict[str, Any]],
    ) -> int:
        """Write the checkpoint, the payments judged and the wallets changed since the last one
        together; bytes of state."""
        state_json = json.dumps(state, separators=(",", ":"))
        async with self.pool.acquire() as conn, conn.transaction():
            for table, key, books in (
                ("auditor_payments", "payment_id", judged),
                ("auditor_wallets", "wallet_id", wallets),
            ):
                if books:
                    # One statement for all the rows: a full re-audit writes a million judged
                    # payments and tens of thousands of wallets per checkpoint.
                    await conn.execute(
                        f"INSERT INTO {table} ({key}, epoch, book) "
                        f"SELECT k, $2, b::jsonb FROM unnest($1::text[], $3::text[]) AS t(k, b) "
                        f"ON CONFLICT ({key}) DO UPDATE SET epoch = excluded.epoch, book = excluded.book",
                        list(books),
                        epoch,
                        [json.dumps(book, separators=(",", ":")) for book in books.values()],
                    )
            await conn.execute(
                "INSERT INTO auditor_checkpoint (auditor, epoch, offsets, state, written_at) "
                "VALUES ($1, $2, $3::jsonb, $4::jsonb, now()) ON CONFLICT (auditor) DO UPDATE SET "
                "epoch = excluded.epoch, offsets = excluded.offsets, state = excluded.state, written_at = now()",
                NAME,
                epoch,
                json.dumps(offsets),
                state_json,
            )
        return len(state_json)

    async def judged_payments(self, epoch: int, payment_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The books of these payments that this epoch judged and let go of."""
        rows = await self.pool.fetch(
            "SELECT payment_id, book::text FROM auditor_payments WHERE payment_id = ANY($1::text[]) AND epoch = $2",
            payment_ids,
            epoch,
        )
        return {row["payment_id"]: json.loads(row["book"]) for row in rows}

    async def wallets(self, epoch: int, wallet_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The running figures of these wallets as this epoch last wrote them (absent: new)."""
        rows = await self.pool.fetch(
            "SELECT wallet_id, book::text FROM auditor_wallets WHERE wallet_id = ANY($1::text[]) AND epoch = $2",
            wallet_ids,
            epoch,
        )
        return {row["wallet_id"]: json.loads(row["book"]) for row in rows}
