"""Wallet REST API (aiohttp, port 8081).

Writes publish a command to `wallet.movement_required` and wait, bounded, for the
wallet worker's outcome; reads come from the PostgreSQL views.

    python -m services.wallet_api
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from typing import Any

from aiohttp import web

from connectors import wallet_views as views
from connectors.config import Config, load_config
from connectors.credentials import WALLET_API
from connectors.logs import setup_logging
from connectors.pg_roles import WALLET_API as WALLET_API_ROLE
from connectors.topics import WALLET_MOVEMENT_REQUIRED, WALLET_MOVEMENT_UPDATES
from domain.access import Action, Principal, may_create_money
from domain.money_sources import ACTOR_MISSING, NOT_BACKED, SOURCE_NOT_ALLOWED
from domain.wallet import OPPOSITE, PAYMENT_MOVEMENT, revert_movement_id
from services.admission import ADMISSION, Admission
from services.http import (
    CONFIG,
    OUTCOMES,
    POOL,
    PUBLISHER,
    ApiError,
    Field,
    authorize,
    command_resources,
    path_uuid,
    read_query,
    require,
    serve,
    service_app,
)
from services.idempotency import Answer, Keyed, Refresh, Run, error_answer, keyed_body, respond
from services.openapi import PENDING, Operation, document
from services.response_bodies import MOVEMENT, MOVEMENT_PAGE, WALLET, WALLET_OPENED
from streams.envelope import command_record, new_meta

log = logging.getLogger("wallet_api")


# Rejection codes of the wallet domain, as HTTP statuses.
REJECTION_STATUS = {
    "wallet_not_found": 404,
    "movement_not_found": 404,
    "already_reverted": 409,
    PAYMENT_MOVEMENT: 409,
    "movement_not_applied": 409,
    "not_revertible": 409,
    "idempotency_conflict": 409,
    "wallet_exists": 409,
    ACTOR_MISSING: 403,
    SOURCE_NOT_ALLOWED: 403,
    NOT_BACKED: 409,
}

# The views trail the log by milliseconds; a movement created a moment ago may not be
# projected yet, so a lookup that finds nothing retries this long before saying 404.
PROJECTION_GRACE_S = 2.0

MOVEMENT_BODY = {
    "type": Field("enum:income|expense"),
    "amount": Field("amount"),
    "currency": Field("currency"),
    "reference": Field("string", required=False),
    "description": Field("string", required=False, multiline=True),
}
REVERT_BODY = {"reason": Field("string", multiline=True), "requested_by": Field("string")}
# An opening balance is money entering the books: an operator's or admin's to give (domain.money_sources).
WALLET_BODY = {
    "user_id": Field("uuid"),
    "currency": Field("currency"),
    "opening_balance": Field("amount", required=False),
}
LIST_QUERY = {
    "limit": Field("int", required=False, minimum=1, maximum=100),
    "starting_after": Field("uuid", required=False),
}
WALLET_ID = {"wallet_id": Field("uuid")}
MOVEMENT_ID = {"movement_id": Field("uuid")}


def outcome_keys(event: dict[str, Any]) -> list[str]:
    if event["envelope"]["event_type"] == "MovementUpdated":
        return [event["movement_id"]]
    return [event["wallet_id"]]


def movement_from_event(event: dict[str, Any]) -> dict[str, Any]:
    created = dt.datetime.fromtimestamp(event["envelope"]["occurred_at"] / 1000, tz=dt.UTC)
    return {
        "id": event["movement_id"],
        "type": event["type"],
        "amount": event["amount"]["amount"],
        "currency": event["amount"]["currency"],
        "wallet_id": event["wallet_id"],
        "created_at": created.isoformat(),
        "status": event["status"],
        "reason_code": event["reason_code"],
        "balance_after": event["balance_after"],
        "reverts_movement_id": event["reverts_movement_id"],
        "reference": event["reference"],
        "description": event["description"],
        "payment_id": event["payment_id"],
    }


async def publish_and_wait(
    request: web.Request, key: str, wallet_id: str, record: dict[str, Any]
) -> dict[str, Any] | None:
    outcomes = request.app[OUTCOMES]
    future = await outcomes.register(key)
    await request.app[PUBLISHER].publish(WALLET_MOVEMENT_REQUIRED.name, wallet_id, record)
    return await outcomes.wait(key, future, request.app[CONFIG].wallet_api.outcome_timeout_s)


def rejected(code: str | None, reason: str | None) -> ApiError:
    code = code or "rejected"
    return ApiError(REJECTION_STATUS.get(code, 422), code, reason or code)


def movement_answer(movement_id: str, outcome: dict[str, Any] | None) -> Answer:
    if outcome is None:
        return 202, {"id": movement_id, "status": "pending", "status_url": f"/api/v1/movement/{movement_id}"}
    if outcome["status"] == "rejected":
        raise rejected(outcome["reason_code"], outcome["reason"])
    return 201, movement_from_event(outcome)


def current_movement(request: web.Request) -> Refresh:
    """A replayed 'pending' answers with the outcome the movement has by now."""

    async def refresh(answer: Answer) -> Answer:
        status, body = answer
        row = await views.get_movement(request.app[POOL], body["id"]) if status == 202 else None
        if row is None:
            return answer
        if row["status"] == "rejected":
            return error_answer(rejected(row["reason_code"], row["reason"]))
        return 201, views.movement_json(row)

    return refresh


async def keyed_response(
    request: web.Request, caller: Principal, body: dict[str, Any], run: Run, refresh: Refresh
) -> web.Response:
    return await respond(request, request.app[CONFIG].wallet_api, caller, body, run, refresh)


async def create_movement(request: web.Request) -> web.Response:
    caller = require(request, Action.CREATE_MOVEMENT)
    async with request.app[ADMISSION].admitted("create_movement"):
        return await _create_movement(request, caller)


async def _create_movement(request: web.Request, caller: Principal) -> web.Response:
    wallet_id = path_uuid(request, "wallet_id")
    body = await keyed_body(request, MOVEMENT_BODY)

    async def run(keyed: Keyed | None) -> Answer:
        movement_id = keyed.id("movement", wallet_id) if keyed else str(uuid.uuid4())
        record = command_record(
            "MovementRequired",
            new_meta(actor=caller),
            movement_id=movement_id,
            wallet_id=wallet_id,
            type=body["type"],
            amount={"amount": body["amount"], "currency": body["currency"]},
            reference=body["reference"],
            description=body["description"],
            reverts_movement_id=None,
            payment_id=None,
        )
        return movement_answer(movement_id, await publish_and_wait(request, movement_id, wallet_id, record))

    return with_location(await keyed_response(request, caller, body, run, current_movement(request)))


def with_location(response: web.Response) -> web.Response:
    if response.status == 202 and response.text:
        response.headers["Location"] = json.loads(response.text)["status_url"]
    return response


async def revert_movement(request: web.Request) -> web.Response:
    caller = require(request, Action.REVERT_MOVEMENT)
    movement_id = path_uuid(request, "movement_id")
    body = await keyed_body(request, REVERT_BODY)

    async def run(keyed: Keyed | None) -> Answer:
        original = await views.get_movement(request.app[POOL], movement_id, wait_s=PROJECTION_GRACE_S)
        if original is None or original["status"] != "applied":
            raise ApiError(404, "movement_not_found", f"no applied movement {movement_id}", "movement_id")
        wallet_id = str(original["wallet_id"])
        revert_id = revert_movement_id(movement_id, keyed.id("revert") if keyed else str(uuid.uuid4()))
        record = command_record(
            "MovementRequired",
            new_meta(actor=caller),
            movement_id=revert_id,
            wallet_id=wallet_id,
            type=OPPOSITE[original["type"]],
            amount={"amount": original["amount"], "currency": original["currency"]},
            reference=f"revert requested by {body['requested_by']}",
            description=body["reason"],
            reverts_movement_id=movement_id,
            payment_id=None,
        )
        return movement_answer(revert_id, await publish_and_wait(request, revert_id, wallet_id, record))

    return with_location(await keyed_response(request, caller, body, run, current_movement(request)))


async def create_wallet(request: web.Request) -> web.Response:
    caller = require(request, Action.OPEN_WALLET)
    body = await keyed_body(request, WALLET_BODY)
    if not caller.privileged and body["user_id"] != caller.subject:
        raise ApiError(403, "forbidden", "a user opens wallets only for themselves", "user_id")
    opening_balance = body["opening_balance"] or 0
    if opening_balance and not may_create_money(caller):
        raise ApiError(403, "forbidden", "only an operator or admin opens a wallet holding money", "opening_balance")

    async def run(keyed: Keyed | None) -> Answer:
        wallet_id = keyed.id("wallet", body["user_id"]) if keyed else str(uuid.uuid4())
        record = command_record(
            "WalletOpenRequested",
            new_meta(actor=caller),
            wallet_id=wallet_id,
            user_id=body["user_id"],
            currency=body["currency"],
            opening_balance=opening_balance,
        )
        outcome = await publish_and_wait(request, wallet_id, wallet_id, record)
        if outcome is None:
            return 202, {"id": wallet_id, "status": "pending", "status_url": f"/api/v1/wallet/{wallet_id}"}
        if outcome["status"] == "rejected":
            code = outcome["reason_code"] or "rejected"
            raise ApiError(REJECTION_STATUS.get(code, 409), code, outcome["reason"] or "rejected")
        return 201, opened_json(wallet_id, outcome["user_id"], outcome["currency"], opening_balance)

    async def opened(answer: Answer) -> Answer:
        status, sent = answer
        row = await views.get_wallet(request.app[POOL], sent["id"]) if status == 202 else None
        if row is None:
            return answer
        return 201, opened_json(sent["id"], str(row["user_id"]), row["currency"], opening_balance)

    return await keyed_response(request, caller, body, run, opened)


def opened_json(wallet_id: str, user_id: str, currency: str, opening_balance: int) -> dict[str, Any]:
    return {"id": wallet_id, "user_id": user_id, "currency": currency, "balance": opening_balance}


async def get_wallet(request: web.Request) -> web.Response:
    wallet_id = path_uuid(request, "wallet_id")
    row = await views.get_wallet(request.app[POOL], wallet_id)
    await authorize_wallet(request, wallet_id, row)
    assert row is not None
    return web.json_response(views.wallet_json(row))


async def authorize_wallet(request: web.Request, wallet_id: str, row: Any) -> None:
    """404 alike for a wallet that does not exist and one the caller may not see."""
    owner = None if row is None else str(row["user_id"])
    not_found = ApiError(404, "wallet_not_found", f"wallet {wallet_id} not found", "wallet_id")
    authorize(request, Action.READ_WALLET, owner, not_found)


async def get_movement(request: web.Request) -> web.Response:
    movement_id = path_uuid(request, "movement_id")
    row = await views.get_movement(request.app[POOL], movement_id)
    wallet = None if row is None else await views.get_wallet(request.app[POOL], str(row["wallet_id"]))
    not_found = ApiError(404, "movement_not_found", f"movement {movement_id} not found (yet)", "movement_id")
    authorize(request, Action.READ_WALLET, None if wallet is None else str(wallet["user_id"]), not_found)
    assert row is not None
    return web.json_response(views.movement_json(row))


async def list_movements(request: web.Request) -> web.Response:
    wallet_id = path_uuid(request, "wallet_id")
    query = read_query(request, LIST_QUERY)
    limit = 20 if query["limit"] is None else int(query["limit"])
    cursor = query["starting_after"]
    await authorize_wallet(request, wallet_id, await views.get_wallet(request.app[POOL], wallet_id))
    page = await views.list_movements(request.app[POOL], wallet_id, limit, cursor)
    if page is None:
        raise ApiError(422, "invalid_cursor", "starting_after is not a movement of this wallet", "starting_after")
    rows, has_more = page
    return web.json_response({"data": [views.movement_json(r) for r in rows], "has_more": has_more})


resources = command_resources(WALLET_API, WALLET_API_ROLE, [WALLET_MOVEMENT_UPDATES.name], outcome_keys)


def rejections(status: int) -> str:
    return "refused by the wallet: " + ", ".join(c for c, s in REJECTION_STATUS.items() if s == status)


PENDING_ANSWER = (202, ("accepted, outcome not known in time: poll status_url (also in Location)", PENDING))
MOVEMENT_REFUSALS = {
    404: "movement_not_found, wallet_not_found",
    409: rejections(409),
    422: "refused by the wallet for another reason, e.g. insufficient funds",
}
OPERATIONS = [
    Operation(
        "POST",
        "/api/v1/wallets",
        create_wallet,
        "open a wallet (holding an opening_balance: operators)",
        body=WALLET_BODY,
        idempotent=True,
        answers=dict([(201, ("opened", WALLET_OPENED)), PENDING_ANSWER]),
        refusals={409: "wallet_exists"},
    ),
    Operation(
        "GET",
        "/api/v1/wallet/{wallet_id}",
        get_wallet,
        "a wallet and its balance",
        WALLET_ID,
        answers={200: ("the wallet as the views hold it", WALLET)},
        refusals={404: "no such wallet, or not the caller's (wallet_not_found)"},
    ),
    Operation(
        "POST",
        "/api/v1/wallet/{wallet_id}/movement",
        create_movement,
        "income or expense (operators)",
        WALLET_ID,
        body=MOVEMENT_BODY,
        idempotent=True,
        answers=dict([(201, ("applied", MOVEMENT)), PENDING_ANSWER]),
        admitted=True,
        refusals=MOVEMENT_REFUSALS,
    ),
    Operation(
        "GET",
        "/api/v1/wallet/{wallet_id}/movements",
        list_movements,
        "movements, newest first",
        WALLET_ID,
        LIST_QUERY,
        answers={200: ("a page of movements", MOVEMENT_PAGE)},
        refusals={404: "no such wallet, or not the caller's (wallet_not_found)", 422: "invalid_cursor"},
    ),
    Operation(
        "GET",
        "/api/v1/movement/{movement_id}",
        get_movement,
        "one movement",
        MOVEMENT_ID,
        answers={200: ("the movement as the views hold it", MOVEMENT)},
        refusals={404: "no such movement (yet), or not the caller's (movement_not_found)"},
    ),
    Operation(
        "POST",
        "/api/v1/movement/{movement_id}/revert",
        revert_movement,
        "revert an applied movement (operators)",
        MOVEMENT_ID,
        body=REVERT_BODY,
        idempotent=True,
        answers=dict([(201, ("the reverting movement, applied", MOVEMENT)), PENDING_ANSWER]),
        refusals=MOVEMENT_REFUSALS,
    ),
]


def create_app(config: Config) -> web.Application:
    routes = [op.route() for op in OPERATIONS]
    app = service_app("wallet-api", config, routes, resources, document("Wallet API", OPERATIONS))
    app[ADMISSION] = Admission.of(config.wallet_api)
    return app


def main() -> None:
    config = load_config()
    setup_logging(config, "wallet-api")
    serve(create_app(config), config, "wallet-api", config.wallet_api.host, config.wallet_api.port)


if __name__ == "__main__":
    main()
