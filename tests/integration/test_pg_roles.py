"""PostgreSQL asks everyone for a password, and each service's role may do what
connectors/pg_roles.GRANTS says and nothing more: tried on the test environment's real server,
with real statements, each in a transaction rolled back so nothing stays."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from connectors.config import Config, state_dir
from connectors.credentials import PG_OWNER, PG_ROLES, PG_SUPERUSER, postgres_login, rotate
from connectors.pg_roles import (
    AUDITOR,
    CONSOLE,
    GRANTS,
    OWNER_ONLY,
    PAYMENT_API,
    PROJECTOR,
    SERVICE_ROLES,
    VIEWS,
    WALLET_API,
)
from connectors.postgres import connect, login_arguments
from devtools.local_postgres import PG_BIN, as_postgres, pg_data_dir, start_postgres, stop_postgres
from devtools.pg_setup import prepare_database
from tests.support import free_port
from tests.support.postgres import inspect_as_owner

PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


@pytest.fixture
async def owner(config: Config) -> AsyncIterator[asyncpg.Connection]:
    conn = await inspect_as_owner(config)
    yield conn
    await conn.close()


async def refused_login(**arguments: object) -> BaseException:
    with pytest.raises((asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError)) as error:
        conn = await asyncpg.connect(**arguments, timeout=10)
        await conn.close()
    return error.value


@pytest.mark.parametrize("role", PG_ROLES)
async def test_no_password_or_a_wrong_one_is_refused_on_tcp_and_on_the_socket(config: Config, role: str) -> None:
    tcp = login_arguments(config, role)
    socket = {**tcp, "host": str(pg_data_dir(config))}
    for where in (tcp, socket):
        await refused_login(**{**where, "password": ""})
        await refused_login(**{**where, "password": postgres_login(config, role).password + "x"})
    conn = await connect(config, role)  # while the right password still gets in
    assert await conn.fetchval("SELECT current_user") == role
    await conn.close()


async def test_each_service_role_holds_exactly_its_grants_on_every_table(owner: asyncpg.Connection) -> None:
    tables = [r["tablename"] for r in await owner.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    named = {t for grants in GRANTS.values() for t in grants} | set(OWNER_ONLY)
    assert set(tables) <= named, f"tables nobody decided about (add them to connectors/pg_roles.GRANTS): {tables}"
    for role in SERVICE_ROLES:
        for table in tables:
            held = {
                p for p in PRIVILEGES if await owner.fetchval("SELECT has_table_privilege($1, $2, $3)", role, table, p)
            }
            assert held == set(GRANTS[role].get(table, ())), (role, table)
    owners = {
        r["tableowner"] for r in await owner.fetch("SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")
    }
    assert owners == {PG_OWNER}


async def test_no_service_role_is_privileged_or_may_create_anything(owner: asyncpg.Connection, config: Config) -> None:
    for role in SERVICE_ROLES:
        row = await owner.fetchrow(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, "
            "has_schema_privilege($1, 'public', 'CREATE') AS schema_create, "
            "has_database_privilege($1, $2, 'CREATE') AS database_create, "
            "has_database_privilege($1, $2, 'TEMP') AS temporary "
            "FROM pg_roles WHERE rolname = $1",
            role,
            config.postgres.database,
        )
        assert not any(row.values()), (role, dict(row))


Attempt = Callable[[asyncpg.Connection], Awaitable[object]]


async def attempt(config: Config, role: str, statement: str | Attempt) -> None:
    """Runs as `role` inside a transaction that is always rolled back."""
    conn = await connect(config, role)
    transaction = conn.transaction()
    await transaction.start()
    try:
        if isinstance(statement, str):
            await conn.execute(statement)
        else:
            await statement(conn)
    finally:
        await transaction.rollback()
        await conn.close()


async def refused(config: Config, role: str, statement: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await attempt(config, role, statement)


WALLET = (
    "INSERT INTO wallets (id, user_id, currency, balance, version, last_updated, last_event_id) "
    "VALUES (gen_random_uuid(), gen_random_uuid(), 'USD', 1, 1, now(), gen_random_uuid())"
)
KEY = (
    "INSERT INTO idempotency_keys (caller, key, endpoint, request_hash, expires_at) "
    "VALUES ('test-roles', gen_random_uuid()::text, '/x', 'h', now())"
)
MOVEMENT = (
    "INSERT INTO wallet_movements (id, wallet_id, type, amount, currency, status, balance_after, wallet_version, "
    "created_at, event_id) VALUES (gen_random_uuid(), gen_random_uuid(), 'income', 1, 'USD', 'applied', 1, 1, "
    "now(), gen_random_uuid())"
)
REFUND = (
    "INSERT INTO payment_refunds (id, payment_id, amount, currency, created_at) "
    "VALUES (gen_random_uuid(), gen_random_uuid(), 1, 'USD', now())"
)
EVERYONE_REFUSED = [
    "CREATE TABLE intruder (id int)",
    "CREATE SCHEMA intruder",
    "CREATE ROLE intruder LOGIN",
    "ALTER TABLE wallets ADD COLUMN intruder int",
    "DROP TABLE projection_offsets",
    "TRUNCATE wallets",
    "DELETE FROM wallets",
    "CREATE TEMP TABLE intruder (id int)",
]
OUTSIDE_THE_GRANTS = {
    PROJECTOR: [KEY, "SELECT * FROM idempotency_keys", "UPDATE idempotency_keys SET locked_at = now()"],
    WALLET_API: [WALLET, MOVEMENT, "UPDATE wallets SET balance = 0", "SELECT * FROM payments", REFUND],
    PAYMENT_API: [
        WALLET,
        "UPDATE payments SET status = 'succeeded'",
        "UPDATE payment_refunds SET status = 'succeeded'",
        "INSERT INTO projection_offsets VALUES ('x', 't', 0, 0)",
    ],
    AUDITOR: ["SELECT * FROM wallets", "SELECT * FROM payments", KEY, "DELETE FROM auditor_payments"],
    CONSOLE: [WALLET, MOVEMENT, REFUND, KEY, "UPDATE wallets SET balance = 0", "SELECT * FROM idempotency_keys"],
}
WHAT_THEY_NEED = {
    PROJECTOR: [
        WALLET,
        MOVEMENT,  # draws from the serial's sequence
        REFUND,
        "UPDATE payments SET status = status",
        "INSERT INTO projection_offsets VALUES ('test-roles', 't', 0, 1) "
        "ON CONFLICT (projection, topic, partition) DO UPDATE SET last_offset = EXCLUDED.last_offset",
        "SELECT version FROM schema_migrations",
    ],
    WALLET_API: [
        "SELECT * FROM wallets LIMIT 1",
        "SELECT * FROM wallet_movements LIMIT 1",
        KEY,
        "SELECT * FROM idempotency_keys LIMIT 1 FOR UPDATE",
        "UPDATE idempotency_keys SET locked_at = NULL WHERE caller = 'test-roles'",
    ],
    PAYMENT_API: [
        "SELECT * FROM payments p JOIN payment_operations o ON o.payment_id = p.id LIMIT 1",
        "SELECT * FROM wallets LIMIT 1",
        REFUND,
        "SELECT pg_advisory_xact_lock(hashtext('test-roles'))",
        KEY,
        "UPDATE idempotency_keys SET locked_at = NULL WHERE caller = 'test-roles'",
    ],
    CONSOLE: [
        *(f"SELECT * FROM {view} LIMIT 1" for view in VIEWS),
        "SELECT * FROM projection_offsets",
    ],
    # Its checkpoint and the payments it judged, upserted (connectors/audit_store.py).
    AUDITOR: [
        "INSERT INTO auditor_checkpoint (auditor, epoch, offsets, state) VALUES ('test-roles', 1, '{}', '{}') "
        "ON CONFLICT (auditor) DO UPDATE SET epoch = excluded.epoch",
        "INSERT INTO auditor_payments (payment_id, epoch, book) VALUES ('test-roles', 1, '{}') "
        "ON CONFLICT (payment_id) DO UPDATE SET book = excluded.book",
        "SELECT epoch, offsets, state FROM auditor_checkpoint LIMIT 1",
    ],
}
CASES = [(role, s) for role in SERVICE_ROLES for s in [*EVERYONE_REFUSED, *OUTSIDE_THE_GRANTS[role]]]


@pytest.mark.parametrize(("role", "statement"), CASES, ids=[f"{r}: {s[:40]}" for r, s in CASES])
async def test_a_service_role_is_refused_outside_its_grants(config: Config, role: str, statement: str) -> None:
    await refused(config, role, statement)


@pytest.mark.parametrize("role", SERVICE_ROLES)
async def test_a_service_role_can_do_what_its_service_needs(config: Config, role: str) -> None:
    for statement in WHAT_THEY_NEED[role]:
        await attempt(config, role, statement)


async def test_the_owner_creates_the_rebuild_schema_and_reads_the_views(config: Config) -> None:
    schema = f"rebuild_test_{uuid.uuid4().hex[:8]}"

    async def rebuild_like(conn: asyncpg.Connection) -> None:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"CREATE TABLE {schema}.wallets (LIKE public.wallets INCLUDING ALL)")
        await conn.fetchval(f"SELECT count(*) FROM public.wallets EXCEPT ALL SELECT count(*) FROM {schema}.wallets")

    await attempt(config, PG_OWNER, rebuild_like)
    await refused(config, PG_OWNER, "CREATE ROLE intruder LOGIN")


async def test_the_running_services_log_in_as_their_roles_never_as_the_superuser(
    config: Config, wallet_system: Config, owner: asyncpg.Connection
) -> None:
    users = {
        r["usename"]
        for r in await owner.fetch(
            "SELECT usename FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            config.postgres.database,
        )
    }
    assert {PROJECTOR, WALLET_API} <= users
    assert PG_SUPERUSER not in users


async def test_rotated_passwords_are_applied_by_setup(config: Config) -> None:
    """The superuser's too: setup logs in with the one the cluster had, and sets the new one.
    (The console's role is the one rotated among the services: no running service uses it.)"""
    before = {role: postgres_login(config, role).password for role in (PG_SUPERUSER, CONSOLE)}
    rotate(config, postgres=[PG_SUPERUSER, CONSOLE])
    await prepare_database(config)
    for role, old in before.items():
        await refused_login(**{**login_arguments(config, role), "password": old})
        conn = await connect(config, role)
        assert await conn.fetchval("SELECT current_user") == role
        await conn.close()


@pytest.mark.parametrize("made_with_trust", [False, True], ids=["new cluster", "trust cluster converted"])
async def test_a_cluster_asks_for_passwords_from_its_first_start(config: Config, made_with_trust: bool) -> None:
    """A new cluster from initdb on; an older checkout's (initdb --auth=trust) once started again."""
    other = dataclasses.replace(
        config,
        environment=f"{config.environment}-pg-{uuid.uuid4().hex[:6]}",
        postgres=dataclasses.replace(config.postgres, port=free_port()),
    )
    data = pg_data_dir(other) / "data"
    try:
        if made_with_trust:
            await asyncio.to_thread(old_trust_cluster, other, data)
        await asyncio.to_thread(start_postgres, other)
        assert "trust" not in (data / "pg_hba.conf").read_text()
        for host in (other.postgres.host, str(pg_data_dir(other))):
            await refused_login(**{**login_arguments(other, PG_SUPERUSER), "host": host, "password": ""})
        conn = await connect(other, PG_SUPERUSER)
        assert await conn.fetchval("SELECT current_database()") == other.postgres.database
        await conn.close()
    finally:
        await asyncio.to_thread(stop_postgres, other)
        shutil.rmtree(pg_data_dir(other), ignore_errors=True)
        shutil.rmtree(state_dir(other), ignore_errors=True)


def old_trust_cluster(config: Config, data: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(data.parent, "postgres", "postgres")
    initdb = [str(PG_BIN / "initdb"), "-D", str(data), "--auth=trust", "-U", PG_SUPERUSER, "-E", "UTF8"]
    subprocess.run(as_postgres(initdb), check=True, capture_output=True)
