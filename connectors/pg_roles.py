"""Who may do what in PostgreSQL: one login role per service, with the grants it needs and no
more. `GRANTS` is the one place they are written: setup (devtools.devctl setup) applies it as
the superuser after every migration, idempotently, and docs/security.md shows it
(`python -m connectors.pg_roles` prints that table).

The owner role (`payments_owner`) runs the migrations and owns every table; no service logs
in as it or as the superuser. A privilege removed from `GRANTS` is revoked by the next setup:
each service role's privileges on every table are reset to exactly what the table says.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import asyncpg

from connectors.config import Config
from connectors.credentials import PG_OWNER, PG_ROLES, PG_SUPERUSER, postgres_login

PROJECTOR = "projector"
WALLET_API = "wallet_api"
PAYMENT_API = "payment_api"
AUDITOR = "auditor"
CONSOLE = "console"
SERVICE_ROLES = (PROJECTOR, WALLET_API, PAYMENT_API, AUDITOR, CONSOLE)

READ = ("SELECT",)
UPSERT = ("SELECT", "INSERT", "UPDATE")  # ON CONFLICT DO UPDATE, SELECT ... FOR UPDATE; never DELETE
VIEWS = ("wallets", "wallet_movements", "payments", "payment_operations", "payment_refunds")

GRANTS: dict[str, dict[str, tuple[str, ...]]] = {
    # Projects the log into the views, with its positions in the same transaction.
    PROJECTOR: {"projection_offsets": UPSERT, "schema_migrations": READ, **dict.fromkeys(VIEWS, UPSERT)},
    WALLET_API: {"wallets": READ, "wallet_movements": READ, "idempotency_keys": UPSERT},
    # Reads payments and the paying wallet; reserves a refund itself (payment_refunds) so two
    # concurrent requests cannot both refund the same money.
    PAYMENT_API: {
        "payments": READ,
        "payment_operations": READ,
        "payment_refunds": ("SELECT", "INSERT"),
        "wallets": READ,
        "idempotency_keys": UPSERT,
    },
    # Judges payments from the log; keeps its checkpoint, the payments it judged and the wallets'
    # running figures (never deletes).
    AUDITOR: {"auditor_checkpoint": UPSERT, "auditor_payments": UPSERT, "auditor_wallets": UPSERT},
    # Read only: the views and how far the projections are.
    CONSOLE: {"projection_offsets": READ, "schema_migrations": READ, **dict.fromkeys(VIEWS, READ)},
}
# Every table a migration creates must be in GRANTS or here (an integration test checks), so
# a new table is a decision about who may touch it, never an accident.
OWNER_ONLY: tuple[str, ...] = ()
# Who logs in as each role, for the table in docs/security.md.
USED_BY = {
    PG_SUPERUSER: "setup only: creates the roles, sets their passwords, applies GRANTS",
    PG_OWNER: "setup's migrations; `payments rebuild` (creates and drops its side schema)",
    PROJECTOR: "services.projector; `payments dlq replay` of a projector's letter (it re-applies it)",
    WALLET_API: "services.wallet_api",
    PAYMENT_API: "services.payment_api",
    AUDITOR: "services.auditor (its checkpoint, the payments it judged and the wallets' running figures)",
    CONSOLE: "read-only inspection: an operator's psql, the benchmark's view watcher, the fault suite's checks",
}

ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
SETUP_LOCK = 7_415_002  # two setups never create the same role at once


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802/7677). Sending this rather
    than the password keeps the password itself out of the server (and of its statement log)."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


async def ensure_roles(conn: asyncpg.Connection, config: Config) -> None:
    """Every role exists, can log in with the credentials file's password and nothing more;
    only the owner may create objects, in the public schema and (rebuild schemas) the database."""
    database = ident(config.postgres.database)
    await conn.execute("SELECT pg_advisory_lock($1)", SETUP_LOCK)
    try:
        for role in PG_ROLES:
            verifier = literal(scram_verifier(postgres_login(config, role).password))
            if role == PG_SUPERUSER:
                await conn.execute(f"ALTER ROLE {ident(role)} PASSWORD {verifier}")
                continue
            if not await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", role):
                await conn.execute(f"CREATE ROLE {ident(role)}")
            await conn.execute(f"ALTER ROLE {ident(role)} WITH {ROLE_ATTRIBUTES} PASSWORD {verifier}")
        logins = ", ".join(ident(r) for r in (PG_OWNER, *SERVICE_ROLES))
        await conn.execute(f"REVOKE ALL ON DATABASE {database} FROM PUBLIC")
        await conn.execute(f"GRANT CONNECT ON DATABASE {database} TO {logins}")
        await conn.execute(f"GRANT CREATE ON DATABASE {database} TO {ident(PG_OWNER)}")
        await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {logins}")
        await conn.execute(f"GRANT CREATE ON SCHEMA public TO {ident(PG_OWNER)}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", SETUP_LOCK)


async def take_ownership(conn: asyncpg.Connection) -> list[str]:
    """Tables an older setup migrated as the superuser become the owner's (their sequences follow)."""
    tables = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND pg_get_userbyid(c.relowner) <> $1",
        PG_OWNER,
    )
    for row in tables:
        await conn.execute(f"ALTER TABLE public.{ident(row['relname'])} OWNER TO {ident(PG_OWNER)}")
    return [row["relname"] for row in tables]


async def apply_grants(conn: asyncpg.Connection) -> None:
    """Each service role's privileges on every public table and sequence become exactly GRANTS."""
    tables = {
        row["relname"]
        for row in await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
        )
    }
    unknown = {t for grants in GRANTS.values() for t in grants} - tables
    if unknown:
        raise RuntimeError(f"connectors/pg_roles.GRANTS names tables no migration created: {sorted(unknown)}")
    roles = ", ".join(ident(r) for r in SERVICE_ROLES)
    async with conn.transaction():
        await conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC, {roles}")
        await conn.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM PUBLIC, {roles}")
        for role, grants in GRANTS.items():
            for table, privileges in grants.items():
                await conn.execute(f"GRANT {', '.join(privileges)} ON public.{ident(table)} TO {ident(role)}")
                if "INSERT" in privileges:
                    for sequence in await owned_sequences(conn, table):
                        await conn.execute(f"GRANT USAGE ON SEQUENCE {sequence} TO {ident(role)}")


async def owned_sequences(conn: asyncpg.Connection, table: str) -> list[str]:
    """The sequences behind a table's serial columns: inserting draws from them."""
    rows = await conn.fetch(
        "SELECT s.oid::regclass::text AS name FROM pg_class s JOIN pg_depend d ON d.objid = s.oid "
        "WHERE s.relkind = 'S' AND d.refobjid = $1::regclass AND d.deptype IN ('a', 'i')",
        f"public.{ident(table)}",
    )
    return [row["name"] for row in rows]


def grants_markdown() -> str:
    """The table docs/security.md shows, generated from GRANTS."""
    lines = ["| role | used by | may |", "|---|---|---|"]
    lines.append(f"| `{PG_SUPERUSER}` | {USED_BY[PG_SUPERUSER]} | everything (superuser) |")
    lines.append(f"| `{PG_OWNER}` | {USED_BY[PG_OWNER]} | owns every table; creates tables and schemas |")
    for role in SERVICE_ROLES:
        tables_by_privileges: dict[tuple[str, ...], list[str]] = {}
        for table, privileges in GRANTS[role].items():
            tables_by_privileges.setdefault(privileges, []).append(f"`{table}`")
        may = [f"{', '.join(p)} on {', '.join(sorted(t))}" for p, t in tables_by_privileges.items()]
        lines.append(f"| `{role}` | {USED_BY[role]} | {'; '.join(may) or 'connect only: no table'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(grants_markdown())
