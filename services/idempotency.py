"""Idempotency-Key handling for every keyed endpoint, the way Stripe does it.

- A key belongs to the authenticated caller: another caller's same key is another key,
  names other ids, and tells nothing about this one.
- The key is claimed in PostgreSQL together with a hash of the request (method, path
  and body) before anything is published. The same key with another request is 409,
  also while the first still runs; a retry of the same request waits for the first
  one's answer and is only ever given that answer.
- The answer is stored and replayed, refreshed from the views where what it created
  has moved on (a refund that completed no longer says pending).
- A key expires after `idempotency_window_s`; used again after that it starts a new
  request, whose ids differ because they include the key's generation.
- A request that fails without an answer (a 5xx, a lost connection) releases the key:
  a retry of the same request runs again with the same ids, which every step applies
  once. A 4xx answer is the key's answer, as at Stripe.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from connectors import idempotency_keys as keys
from connectors.config import ApiConfig
from domain.access import Principal
from domain.ids import keyed_id
from services.http import POOL, ApiError, Field, error_response, idempotency_key, read_body

FIRST_POLL_S = 0.02
MAX_POLL_S = 0.25


@dataclass(frozen=True)
class Keyed:
    """The claimed key a request runs under; `id` derives the ids it creates."""

    caller: str
    key: str
    generation: int

    def id(self, kind: str, *scope: str) -> str:
        return keyed_id(kind, self.caller, self.key, self.generation, *scope)


Answer = tuple[int, Any]
Run = Callable[[Keyed | None], Awaitable[Answer]]
Refresh = Callable[[Answer], Awaitable[Answer]]


def error_answer(exc: ApiError) -> Answer:
    """A refusal as an answer to store and replay, in the body every error has."""
    refused = error_response(exc.status, exc.code, exc.message, exc.field)
    return exc.status, json.loads(refused.text or "{}")


def fingerprint(request: web.Request, body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([request.method, request.path, body], sort_keys=True).encode()).hexdigest()


def lock_s(api: ApiConfig) -> float:
    """How long a claim may run before a retry may take it over (its holder died)."""
    return 2 * api.outcome_timeout_s + 5


async def keyed_body(request: web.Request, fields: Mapping[str, Field]) -> dict[str, Any]:
    """The body of a keyed request, after its Idempotency-Key header: a malformed key is the
    first thing wrong with the request, whatever its body."""
    idempotency_key(request)
    return await read_body(request, fields)


async def respond(
    request: web.Request, api: ApiConfig, caller: Principal, body: dict[str, Any], run: Run, refresh: Refresh | None
) -> web.Response:
    """Run the request once per (caller, key, generation) and answer every retry alike."""
    key = idempotency_key(request)
    if key is None:
        status, answer = await run(None)
        return web.json_response(answer, status=status)
    pool = request.app[POOL]
    route = request.match_info.route.resource
    endpoint = f"{request.method} {route.canonical if route else request.path}"
    request_hash = fingerprint(request, body)
    held_s = lock_s(api)
    deadline = time.monotonic() + held_s + 1
    poll_s = FIRST_POLL_S
    while True:
        claim = await keys.claim(pool, caller.subject, key, endpoint, request_hash, api.idempotency_window_s, held_s)
        if claim.state == "claimed":
            return await _run_claimed(request, Keyed(caller.subject, key, claim.generation), run)
        if claim.state == "conflict":
            raise ApiError(
                409,
                "idempotency_conflict",
                "this Idempotency-Key was used with a different request",
                "Idempotency-Key",
            )
        if claim.state == "done":
            assert claim.status_code is not None
            replayed = (claim.status_code, claim.response)
            status, answer = await refresh(replayed) if refresh and claim.status_code < 400 else replayed
            return web.json_response(answer, status=status, headers={"Idempotent-Replayed": "true"})
        if time.monotonic() >= deadline:
            raise ApiError(409, "request_in_progress", "a request with this Idempotency-Key is still running")
        await asyncio.sleep(poll_s)
        poll_s = min(poll_s * 2, MAX_POLL_S)


async def _run_claimed(request: web.Request, keyed: Keyed, run: Run) -> web.Response:
    pool = request.app[POOL]
    try:
        status, answer = await run(keyed)
    except ApiError as exc:
        if exc.status >= 500:
            await keys.release(pool, keyed.caller, keyed.key, keyed.generation)
            raise
        status, answer = error_answer(exc)
    except BaseException:
        await asyncio.shield(keys.release(pool, keyed.caller, keyed.key, keyed.generation))
        raise
    await keys.complete(pool, keyed.caller, keyed.key, keyed.generation, status, answer)
    return web.json_response(answer, status=status)
