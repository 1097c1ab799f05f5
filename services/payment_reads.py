"""What the payment API reads: a payment from the views, waiting for it to be decided, and the
wallets it has already looked up (their owner and currency never change)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import asyncpg
from aiohttp import web

from connectors import payment_views as views
from connectors import wallet_views
from connectors.lru import LruCache
from domain import payment as domain

POLL_S = 0.05
# Once the terminal event is on the log, the view row trails it by milliseconds.
SETTLE_POLL_S = 0.01
MAX_POLL_S = 0.25
# How long an answer waits for the views to catch up with a terminal event already seen.
SHOW_DECIDED_S = 1.0


async def wait_for_payment(
    pool: asyncpg.Pool,
    payment_id: str,
    timeout: float,
    decided: Awaitable[Any] | None = None,
    settled: bool = False,
) -> asyncpg.Record | None:
    """The payment's view row once terminal, or whatever the view holds when the time is up:
    the one wait of the payment API, for a new payment and for `GET ?wait=N` alike.

    Given `decided` (the terminal event arriving on the log), it waits for that without
    querying, then reads the view, which trails the log by milliseconds (SETTLE_POLL_S).
    Otherwise the pause doubles up to MAX_POLL_S: under overload the views fall behind and
    a fixed 10 ms poll from every waiting request turns into a flood of queries that slows
    the projector further."""
    deadline = time.monotonic() + timeout
    poll_s = SETTLE_POLL_S if settled else POLL_S
    if decided is not None:
        await decided  # bounded by the same timeout: the waiter gives up with us
        poll_s = SETTLE_POLL_S
    while True:
        row = await views.get_payment(pool, payment_id)
        remaining = deadline - time.monotonic()
        if (row is not None and row["status"] in domain.TERMINAL_STATUSES) or remaining <= 0:
            return row
        await asyncio.sleep(min(poll_s, remaining))
        poll_s = min(poll_s * 2, MAX_POLL_S)


async def payment_body(pool: asyncpg.Pool, row: asyncpg.Record) -> dict[str, Any]:
    payment_id = str(row["id"])
    return views.payment_json(
        row, await views.list_operations(pool, payment_id), await views.list_refunds(pool, payment_id)
    )


async def body_knowing(
    pool: asyncpg.Pool, row: asyncpg.Record, decided: dict[str, Any], within_s: float = SHOW_DECIDED_S
) -> dict[str, Any]:
    """The payment as the views show it once they hold what its terminal event said (`decided`);
    the event's own account if they still do not after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        shown = await payment_body(pool, row)
        if knows_all_of(shown, decided):
            return shown
        if time.monotonic() >= deadline:
            return decided
        await asyncio.sleep(SETTLE_POLL_S)
        row = await views.get_payment(pool, shown["id"]) or row


def knows_all_of(shown: dict[str, Any], answered: dict[str, Any]) -> bool:
    """Whether a payment as the views show it now holds everything an earlier answer said: the
    views trail the log, and each of their tables follows its own topic, so a terminal row can
    come before its operations. An idempotent replay must never take a step back."""
    if shown["status"] != answered.get("status") and shown["status"] not in domain.TERMINAL_STATUSES:
        return False
    for items in ("operations", "refunds"):
        present = {item["id"] for item in shown.get(items, ())}
        if any(item["id"] not in present for item in answered.get(items, ())):
            return False
    return True


WALLETS = web.AppKey("wallets", LruCache)
WALLET_VIEW_WAIT_S = 0.5  # the views trail the log by the projector's lag (tens of ms)


async def known_wallet(known: LruCache[str, dict[str, Any]], pool: asyncpg.Pool, wallet_id: str) -> Any:
    """A wallet's owner and currency, which never change: read once from the views, then kept.
    A wallet not found is not kept (it may be opened a moment later). The wallet API answers an
    opening from its event, before the projector has written the view, so a wallet not found is
    looked for again for up to WALLET_VIEW_WAIT_S: open-then-pay must not answer 404."""
    wallet = known.get(wallet_id)
    if wallet is None:
        row = await wallet_views.get_wallet(pool, wallet_id)
        deadline, pause = time.monotonic() + WALLET_VIEW_WAIT_S, SETTLE_POLL_S
        while row is None and time.monotonic() < deadline:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)
            row = await wallet_views.get_wallet(pool, wallet_id)
        if row is None:
            return None
        wallet = {"user_id": row["user_id"], "currency": row["currency"]}
        known.put(wallet_id, wallet)
    return wallet
