"""A test connects to PostgreSQL as someone: as the owner to inspect (and, for a fault, tamper
with) the views the way an operator with psql would; as a service's role to try its grants."""

from __future__ import annotations

import asyncpg

from connectors.config import Config
from connectors.credentials import PG_OWNER
from connectors.postgres import connect


async def inspect_as_owner(config: Config) -> asyncpg.Connection:
    return await connect(config, PG_OWNER)
