"""What both REST services share: JSON errors, strict body validation, health."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from connectors.metrics import http_metrics_middleware
from connectors.tracing import TRACEPARENT_HEADER, continue_or_start, current_traceparent
from domain.ids import is_uuid
from domain.money import CURRENCIES

log = logging.getLogger(__name__)

MAX_AMOUNT = 10**15  # minor units; anything larger is a typo or an attack, not a payment


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "field": field}}, status=status)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "unexpected error; see the service log")


@dataclass(frozen=True)
class Field:
    kind: str  # "uuid", "string", "amount", "currency", "enum:<a>|<b>"
    required: bool = True
    max_length: int = 500


async def read_body(request: web.Request, fields: dict[str, Field]) -> dict[str, Any]:
    """The JSON object body, exactly these fields, each checked; errors name the field."""
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "malformed_json", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "request body must be a JSON object")
    for name in body:
        if name not in fields:
            raise ApiError(400, "unknown_field", f"unknown field {name!r}", name)
    for name, spec in fields.items():
        if name not in body or body[name] is None:
            if spec.required:
                raise ApiError(400, "missing_field", f"field {name!r} is required", name)
            body[name] = None
            continue
        body[name] = check(name, body[name], spec)
    return body


def check(name: str, value: Any, spec: Field) -> Any:
    if spec.kind == "amount":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(422, "invalid_amount", f"{name} must be an integer number of minor units", name)
        if not 0 < value <= MAX_AMOUNT:
            raise ApiError(422, "invalid_amount", f"{name} must be between 1 and {MAX_AMOUNT}", name)
        return value
    if not isinstance(value, str):
        raise ApiError(422, "invalid_type", f"{name} must be a string", name)
    if spec.kind == "uuid":
        if not is_uuid(value):
            raise ApiError(422, "invalid_id", f"{name} must be a UUID", name)
        return value.lower()
    if spec.kind == "currency":
        if value not in CURRENCIES:
            raise ApiError(422, "invalid_currency", f"{name} must be an ISO 4217 code such as USD", name)
        return value
    if spec.kind.startswith("enum:"):
        choices = spec.kind[5:].split("|")
        if value not in choices:
            raise ApiError(422, "invalid_value", f"{name} must be one of {', '.join(choices)}", name)
        return value
    if len(value) > spec.max_length:
        raise ApiError(422, "too_long", f"{name} is longer than {spec.max_length} characters", name)
    return value


def path_uuid(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not is_uuid(value):
        raise ApiError(422, "invalid_id", f"{name} must be a UUID", name)
    return value.lower()


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= 255:
        raise ApiError(400, "invalid_header", "Idempotency-Key must be 1 to 255 characters", "Idempotency-Key")
    return key


@web.middleware
async def trace_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Continues the caller's W3C trace (or starts one) for everything this request publishes."""
    traceparent = continue_or_start(request.headers.get(TRACEPARENT_HEADER))
    token = current_traceparent.set(traceparent)
    try:
        response = await handler(request)
    finally:
        current_traceparent.reset(token)
    response.headers[TRACEPARENT_HEADER] = traceparent
    return response


def service_middlewares(service: str) -> list[Any]:
    return [http_metrics_middleware(service), trace_middleware, error_middleware]


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
