"""PostgreSQL adapter: connections and pools, each logged in as a named role, and versioned
migrations, applied as the owner role."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

from connectors.config import Config
from connectors.credentials import PG_OWNER, postgres_login

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant shared by every migrator, so two processes never migrate at once.
MIGRATION_LOCK = 7_415_001

log = logging.getLogger(__name__)


def login_arguments(config: Config, role: str) -> dict[str, object]:
    """Where and as whom: the role's password comes from the credentials file, never from config."""
    login = postgres_login(config, role)
    where = config.postgres
    return {
        "host": where.host,
        "port": where.port,
        "database": where.database,
        "user": login.username,
        "password": login.password,
    }


async def connect(config: Config, role: str, timeout: float = 60) -> asyncpg.Connection:
    return await asyncpg.connect(**login_arguments(config, role), timeout=timeout)


async def _keep_session(_: asyncpg.Connection) -> None:
    """No session state to reset: our connections hold none (locks and settings are transaction
    scoped). asyncpg still rolls back a transaction left open; what this skips is the reset
    query it sends on every release, a round trip that cost 9 % of the payment API's time."""


async def create_pool(config: Config, role: str, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        **login_arguments(config, role), min_size=min_size, max_size=max_size, reset=_keep_session
    )
    assert pool is not None
    return pool


def migration_files() -> list[tuple[int, Path]]:
    files = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        files.append((int(path.name.split("_", 1)[0]), path))
    return files


async def pending_migrations(db: asyncpg.Pool | asyncpg.Connection) -> list[str]:
    """Migrations not applied yet, for a service that needs the tables but may not create them."""
    if await db.fetchval("SELECT to_regclass('public.schema_migrations')") is None:
        return [path.name for _, path in migration_files()]
    done = {row["version"] for row in await db.fetch("SELECT version FROM schema_migrations")}
    return [path.name for version, path in migration_files() if version not in done]


async def migrate(config: Config) -> list[str]:
    """Apply migrations not yet recorded in schema_migrations; return their names. As the owner
    role, so the tables belong to it; setup then grants each service what it needs."""
    conn = await connect(config, PG_OWNER)
    applied_now = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, path in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, path.name)
            log.info("applied migration %s", path.name)
            applied_now.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        await conn.close()
    return applied_now
