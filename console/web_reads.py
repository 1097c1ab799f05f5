"""What the web console reads: the PostgreSQL views (as the read-only `console` role), the log (as
the `console` principal, through console/sources.py), and the services' own pages over HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import asyncpg
from aiokafka import TopicPartition

from connectors.auth import issue_token
from connectors.config import Config
from connectors.payment_views import get_payment, list_operations, list_refunds, payment_json
from connectors.wallet_views import get_wallet, list_movements, movement_json, wallet_json
from console.entries import Entry
from console.sources import ConsoleError, Log
from console.trace import collect
from domain.ids import is_uuid

SEARCH_LIMIT = 50
MOVEMENTS_SHOWN = 100
VIOLATION_TIMES = 50  # the newest violations get their event's time read from the log
SPAN_READ_AT_ONCE = 10_000  # messages between two named events of a partition read in one go
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=3)
WORKER_TOKEN_TTL_S = 60  # the token minted to read the worker's state page lives this long


class Refused(ValueError):
    """A search field that cannot match anything; the message names the field."""


async def search_payments(pool: asyncpg.Pool, query: Mapping[str, str]) -> list[dict[str, Any]]:
    """Payments by id, user id and status (each optional), newest first."""
    for name in ("id", "user_id"):
        if query.get(name) and not is_uuid(query[name]):
            raise Refused(f"{name} must be a UUID")
    rows = await pool.fetch(
        "SELECT * FROM payments WHERE ($1::uuid IS NULL OR id = $1) AND ($2::uuid IS NULL OR user_id = $2) "
        "AND ($3::text IS NULL OR status = $3) ORDER BY created_at DESC, id LIMIT $4",
        query.get("id") or None,
        query.get("user_id") or None,
        query.get("status") or None,
        SEARCH_LIMIT,
    )
    return [payment_json(row) for row in rows]


async def payment_with_history(pool: asyncpg.Pool, payment_id: str) -> dict[str, Any] | None:
    row = await get_payment(pool, payment_id)
    if row is None:
        return None
    return payment_json(row, await list_operations(pool, payment_id), await list_refunds(pool, payment_id))


async def wallet_with_movements(
    pool: asyncpg.Pool, wallet_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    row = await get_wallet(pool, wallet_id)
    if row is None:
        return None
    found = await list_movements(pool, wallet_id, MOVEMENTS_SHOWN, None)
    rows = found[0][:MOVEMENTS_SHOWN] if found else []
    return wallet_json(row), [movement_json(m) for m in rows]


async def timeline_of(config: Config, ident: str) -> list[Entry]:
    async with Log(config) as log:
        entries, *_ = await collect(log, ident, None)
    return entries


async def event_at(config: Config, topic: str, partition: int, offset: int) -> Entry | None:
    async with Log(config) as log:
        return await _one(log, topic, partition, offset)


async def _one(log: Log, topic: str, partition: int, offset: int) -> Entry | None:
    if partition not in log.partitions(topic):
        return None
    tp = TopicPartition(topic, partition)
    if not 0 <= offset < (await log.ends([tp]))[tp]:
        return None
    return next(iter([e async for e in log.read({tp: offset}, {tp: offset + 1})]), None)


async def event_times(config: Config, coordinates: list[tuple[str, int, int]]) -> dict[tuple[str, int, int], int]:
    """The log's timestamp of each event named by (topic, partition, offset): one read over every
    partition, from its first named offset to its last (each read of the log waits up to half a
    second for the broker, so one read per event made the page take seconds); a partition whose
    named events lie far apart is read event by event instead."""
    wanted = set(coordinates)
    spans: dict[TopicPartition, list[int]] = {}
    for topic, partition, offset in wanted:
        spans.setdefault(TopicPartition(topic, partition), []).append(offset)
    near = {tp: offsets for tp, offsets in spans.items() if max(offsets) - min(offsets) <= SPAN_READ_AT_ONCE}
    times: dict[tuple[str, int, int], int] = {}
    if not wanted:
        return times
    async with Log(config) as log:
        near = {tp: offsets for tp, offsets in near.items() if tp.partition in log.partitions(tp.topic)}
        ends = await log.ends(near) if near else {}
        starts = {tp: min(offsets) for tp, offsets in near.items()}
        async for entry in log.read(starts, {tp: min(max(near[tp]) + 1, ends[tp]) for tp in near}):
            if (entry.topic, entry.partition, entry.offset) in wanted:
                times[(entry.topic, entry.partition, entry.offset)] = entry.timestamp
        for where in sorted(w for w in wanted if TopicPartition(w[0], w[1]) not in near):
            found = await _one(log, *where)
            if found is not None:
                times[where] = found.timestamp
    return times


async def get_json(session: aiohttp.ClientSession, url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, headers=headers, timeout=HTTP_TIMEOUT) as answer:
        try:
            return answer.status, await answer.json(content_type=None)
        except ValueError:
            return answer.status, (await answer.text())[:200]


async def worker_state(
    session: aiohttp.ClientSession, config: Config, kind: str, ident: str, subject: str, roles: list[str]
) -> dict[str, Any] | str:
    """A worker's live state for a payment or wallet (`kind`), read with a token minted for the
    operator logged in (so the worker's own checks and logs see who asked), or why it is not shown."""
    port = config.payment_worker.web_port if kind == "payments" else config.wallet_worker.web_port
    token = issue_token(config.auth, subject, roles, ttl_s=WORKER_TOKEN_TTL_S)
    try:
        status, body = await get_json(session, f"http://127.0.0.1:{port}/{kind}/{ident}/", token)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"the worker on port {port} did not answer ({type(exc).__name__}): is it running?"
    if status == 200 and isinstance(body, dict):
        return body
    if status == 404:
        return "the worker holds no state for it (not yet there, or an unknown id)"
    return f"the worker answered {status}: {body}"


async def violations(session: aiohttp.ClientSession, config: Config) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{config.auditor.port}/violations"
    try:
        status, body = await get_json(session, url)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ConsoleError(f"the money auditor did not answer on {url} ({type(exc).__name__})") from exc
    if status != 200 or not isinstance(body, list):
        raise ConsoleError(f"the money auditor answered {status} on {url}")
    return body
