"""Setup's PostgreSQL part, as the superuser and idempotent: every role with the credentials
file's password, the owner's tables, the migrations (as the owner), then connectors/pg_roles.GRANTS.
Run again after `python -m connectors.credentials rotate`, it sets the new passwords.

    python -m devtools.pg_setup superuser-password   # for docker-compose.kafka.yml's postgres
"""

from __future__ import annotations

import sys
from pathlib import Path

import asyncpg

from connectors.config import Config, load_config, state_dir
from connectors.credentials import PG_SUPERUSER, ensure_credentials, postgres_login
from connectors.pg_roles import apply_grants, ensure_roles, take_ownership
from connectors.postgres import connect, login_arguments, migrate
from devtools.infra_base import InfraError
from devtools.local_postgres import remember_superuser_password, superuser_password_file

# docker-compose.kafka.yml's postgres takes the superuser password from this variable.
SUPERUSER_PASSWORD_VARIABLE = "POSTGRES_SUPERUSER_PASSWORD"


def _local_cluster(config: Config) -> Path | None:
    """The directory of the cluster devtools.local_postgres runs, if this environment has one."""
    link = state_dir(config) / "postgres"
    return link.resolve() if link.exists() else None


async def superuser_connection(config: Config) -> asyncpg.Connection:
    """As the superuser with the credentials file's password or, when it was just rotated, with
    the one the local cluster was last given (setup is what hands the new one to the server)."""
    try:
        return await connect(config, PG_SUPERUSER)
    except asyncpg.InvalidPasswordError:
        base = _local_cluster(config)
        previous = superuser_password_file(base) if base else None
        if previous is None or not previous.exists():
            raise InfraError(
                f"PostgreSQL at {config.postgres.host}:{config.postgres.port} refuses the superuser password of "
                "the credentials file; give the server that password, or `make reset` for a new local cluster"
            ) from None
        return await asyncpg.connect(**{**login_arguments(config, PG_SUPERUSER), "password": previous.read_text()})


async def prepare_database(config: Config) -> list[str]:
    """Returns the migrations applied now."""
    ensure_credentials(config)
    conn = await superuser_connection(config)
    try:
        await ensure_roles(conn, config)
        base = _local_cluster(config)
        if base is not None:
            remember_superuser_password(config, base)
        await take_ownership(conn)
        applied = await migrate(config)
        await apply_grants(conn)
    finally:
        await conn.close()
    return applied


def main(argv: list[str]) -> int:
    if argv != ["superuser-password"]:
        print(__doc__, file=sys.stderr)
        return 2
    config = load_config()
    ensure_credentials(config)
    print(postgres_login(config, PG_SUPERUSER).password)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
