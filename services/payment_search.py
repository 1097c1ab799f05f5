"""Payment search (GET /api/v1/payments): filters and keyset pages over the payment views.

Operators and admins search everyone's payments; a user searches only their own. Another
user's payments are reported as absent (domain/access.py): a user naming another user_id
gets an empty page, never a refusal that would confirm the user exists."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from connectors import payment_views as views
from connectors.projections import STATUS_RANK
from domain.access import Action
from domain.ids import is_uuid
from services.http import POOL, ApiError, Field, read_query, require
from services.openapi import Operation, answer_schema
from services.response_bodies import PAYMENT

DEFAULT_LIMIT = 20
SEARCH_QUERY = {
    "user_id": Field("uuid", required=False),
    "status": Field("enum:" + "|".join(sorted(STATUS_RANK, key=STATUS_RANK.__getitem__)), required=False),
    "provider": Field("string", required=False, max_length=50),
    "method": Field("enum:wallet|external", required=False),
    "created_from": Field("datetime", required=False),
    "created_to": Field("datetime", required=False),
    "limit": Field("int", required=False, minimum=1, maximum=100),
    "starting_after": Field("uuid", required=False),
}
PAYMENT_PAGE = answer_schema({"data": {"type": "array", "items": PAYMENT}, "has_more": {"type": "boolean"}})
EMPTY_PAGE: dict[str, Any] = {"data": [], "has_more": False}


async def search_payments(request: web.Request) -> web.Response:
    caller = require(request, Action.READ_PAYMENT)
    query = read_query(request, SEARCH_QUERY)
    if query["created_from"] and query["created_to"] and query["created_to"] < query["created_from"]:
        raise ApiError(422, "invalid_value", "created_to is before created_from", "created_to")
    owner = None if caller.privileged else caller.subject
    if owner is not None and (not is_uuid(owner) or query["user_id"] not in (None, owner.lower())):
        return web.json_response(EMPTY_PAGE)  # someone else's payments: as if there were none
    search = views.PaymentSearch(
        owner.lower() if owner else query["user_id"],
        query["status"],
        query["provider"],
        query["method"],
        query["created_from"],
        query["created_to"],
    )
    limit = DEFAULT_LIMIT if query["limit"] is None else int(query["limit"])
    page = await views.search_payments(request.app[POOL], search, limit, query["starting_after"], owner)
    if page is None:
        message = "starting_after is not a payment this search can see"
        raise ApiError(422, "invalid_cursor", message, "starting_after")
    rows, has_more = page
    return web.json_response({"data": [views.payment_json(row) for row in rows], "has_more": has_more})


SEARCH_OPERATION = Operation(
    "GET",
    "/api/v1/payments",
    search_payments,
    "search payments, newest first (a user: only their own)",
    query=SEARCH_QUERY,
    answers={
        200: (
            "a page of payments without their operations and refunds, newest first by (created_at, id); "
            "created_from is inclusive, created_to exclusive; pass the last id as starting_after for the next",
            PAYMENT_PAGE,
        )
    },
    refusals={422: "starting_after names no payment the caller may see (invalid_cursor), or created_to < created_from"},
)
