"""Payment search (GET /api/v1/payments) on the real views: filters, keyset pages across
payments as they are created, who sees whose payments, refusals naming the parameter."""

from __future__ import annotations

import urllib.parse
import uuid
from typing import Any

import aiohttp
import pytest

from connectors.auth import issue_token
from connectors.config import Config
from tests.conftest import ensure_running
from tests.integration.test_payment_service import new_wallet, payment_in, wallet_payment
from tests.support import Api
from tests.support.postgres import inspect_as_owner

PAYMENTS = 7


def as_user(api: Api, config: Config, subject: str, role: str = "user") -> Api:
    return api.as_(issue_token(config.auth, subject, [role]))


def query(**params: Any) -> str:
    return "/api/v1/payments?" + urllib.parse.urlencode(params)


@pytest.fixture(scope="module")
async def payer(payment_api: Api, wallet_api: Api) -> dict[str, Any]:
    """A fresh user with PAYMENTS decided payments: all completed but the last, refused for funds."""
    wallet_id, user_id = await new_wallet(wallet_api, 1_000)
    ids = []
    for amount in [100] * (PAYMENTS - 1) + [5_000]:
        status, body = await payment_api.post("/api/v1/payments", wallet_payment(user_id, wallet_id, amount))
        assert status == 201, body
        ids.append(body["id"])
    payments = [await payment_in(payment_api, pid, "completed", "failed") for pid in ids]
    return {"user_id": user_id, "wallet_id": wallet_id, "payments": payments}


async def pages(api: Api, limit: int, **filters: Any) -> list[list[dict[str, Any]]]:
    found: list[list[dict[str, Any]]] = []
    after: dict[str, str] = {}
    while True:
        status, body = await api.get(query(limit=limit, **filters, **after))
        assert status == 200, body
        found.append(body["data"])
        if not body["has_more"]:
            return found
        assert len(body["data"]) == limit
        after = {"starting_after": body["data"][-1]["id"]}


def newest_first(payments: list[dict[str, Any]]) -> bool:
    keys = [(p["created_at"], p["id"]) for p in payments]
    return keys == sorted(keys, reverse=True)


async def test_a_user_pages_through_their_payments_newest_first_without_duplicates_or_gaps(
    payment_api: Api, config: Config, payer: dict[str, Any]
) -> None:
    user = as_user(payment_api, config, payer["user_id"])
    found = await pages(user, 3)  # no user_id: a user's search is their own
    assert [len(page) for page in found] == [3, 3, 1]
    listed = [p["id"] for page in found for p in page]
    assert sorted(listed) == sorted(p["id"] for p in payer["payments"])
    assert newest_first([p for page in found for p in page])
    assert {p["user_id"] for page in found for p in page} == {payer["user_id"]}


async def test_each_filter_narrows_the_search(payment_api: Api, config: Config, payer: dict[str, Any]) -> None:
    mine = {"user_id": payer["user_id"]}
    statuses = {p["id"]: p["status"] for p in payer["payments"]}
    failed = [pid for pid, s in statuses.items() if s == "failed"]
    assert len(failed) == 1
    for status, expected in (("failed", failed), ("completed", [pid for pid in statuses if pid not in failed])):
        _, body = await payment_api.get(query(status=status, **mine))
        assert sorted(p["id"] for p in body["data"]) == sorted(expected)
    _, body = await payment_api.get(query(method="wallet", limit=100, **mine))
    assert len(body["data"]) == PAYMENTS
    for empty in ({"method": "external"}, {"provider": "stripe"}, {"status": "refunded"}):
        _, body = await payment_api.get(query(**empty, **mine))
        assert body == {"data": [], "has_more": False}, empty
    ordered = sorted(payer["payments"], key=lambda p: (p["created_at"], p["id"]))
    middle = ordered[PAYMENTS // 2]["created_at"]
    _, newer = await payment_api.get(query(created_from=middle, limit=100, **mine))
    _, older = await payment_api.get(query(created_to=middle, limit=100, **mine))
    assert all(p["created_at"] >= middle for p in newer["data"]) and newer["data"]
    assert all(p["created_at"] < middle for p in older["data"]) and older["data"]
    assert len(newer["data"]) + len(older["data"]) == PAYMENTS  # from inclusive, to exclusive: no gap


async def test_a_user_sees_only_their_own_and_an_operator_sees_everyone(
    payment_api: Api, config: Config, payer: dict[str, Any]
) -> None:
    theirs = payer["payments"][0]["id"]
    stranger = as_user(payment_api, config, str(uuid.uuid4()))
    status, body = await stranger.get(query(user_id=payer["user_id"]))
    assert (status, body) == (200, {"data": [], "has_more": False})
    status, body = await stranger.get(query())
    assert (status, body) == (200, {"data": [], "has_more": False})
    # Another user's payment as a cursor is refused exactly as a payment that does not exist.
    hidden = await stranger.get(query(starting_after=theirs))
    absent = await stranger.get(query(starting_after=str(uuid.uuid4())))
    assert hidden == absent and hidden[0] == 422 and hidden[1]["error"]["field"] == "starting_after"
    operator = as_user(payment_api, config, "test-operator", "operator")
    found = await pages(operator, 4, user_id=payer["user_id"])
    assert sorted(p["id"] for page in found for p in page) == sorted(p["id"] for p in payer["payments"])
    status, body = await operator.get(query(limit=2))  # everyone's: newest first over all users
    assert status == 200 and len(body["data"]) == 2 and body["has_more"] and newest_first(body["data"])


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"status": "lost"}, 422, "status"),
        ({"method": "card"}, 422, "method"),
        ({"limit": "0"}, 422, "limit"),
        ({"limit": "101"}, 422, "limit"),
        ({"limit": "ten"}, 422, "limit"),
        ({"user_id": "someone"}, 422, "user_id"),
        ({"starting_after": "last"}, 422, "starting_after"),
        ({"created_from": "2026-01-31"}, 422, "created_from"),  # no offset: whose midnight?
        ({"created_from": "2026-01-31T00:00:00 01:00"}, 422, "created_from"),  # '+' sent unencoded
        ({"created_to": "yesterday"}, 422, "created_to"),
        ({"created_from": "2026-02-01T00:00:00Z", "created_to": "2026-01-01T00:00:00Z"}, 422, "created_to"),
        ({"sort": "amount"}, 400, "sort"),
    ],
)
async def test_a_bad_filter_is_refused_naming_it(
    payment_api: Api, params: dict[str, str], status: int, field: str
) -> None:
    answer, body = await payment_api.get(query(**params))
    assert answer == status, body
    assert body["error"]["field"] == field


async def test_an_offset_in_a_time_is_honoured(payment_api: Api, payer: dict[str, Any]) -> None:
    newest = max(p["created_at"] for p in payer["payments"])
    _, body = await payment_api.get(query(user_id=payer["user_id"], created_from="2000-01-01T05:00:00+05:00"))
    assert len(body["data"]) == min(PAYMENTS, 20) and body["data"][0]["created_at"] == newest


async def test_both_searches_are_served_by_an_index(config: Config) -> None:
    conn = await inspect_as_owner(config)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")  # a small table would be read whole anyway
            plans = {}
            for name, where in (("everyone", ""), ("one user", "WHERE user_id = $1 ")):
                sql = f"EXPLAIN SELECT * FROM payments {where}ORDER BY created_at DESC, id DESC LIMIT 21"
                args = [str(uuid.uuid4())] if where else []
                plans[name] = "\n".join(r[0] for r in await conn.fetch(sql, *args))
    finally:
        await conn.close()
    assert "payments_created" in plans["everyone"] and "Sort" not in plans["everyone"], plans
    assert "payments_user_created" in plans["one user"] and "Sort" not in plans["one user"], plans


async def test_the_gateway_routes_the_search(
    payment_system: Config, supervisor: Any, http: aiohttp.ClientSession, payer: dict[str, Any]
) -> None:
    ensure_running(payment_system, supervisor, "gateway")
    gateway = Api(http, f"http://127.0.0.1:{payment_system.gateway.port}")
    user = as_user(gateway, payment_system, payer["user_id"])
    status, body = await user.get(query(limit=100))
    assert status == 200, body
    assert sorted(p["id"] for p in body["data"]) == sorted(p["id"] for p in payer["payments"])
    status, body = await gateway.get(query())
    assert status == 401, body
