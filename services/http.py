"""What both REST services share: JSON errors, strict body validation, health."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
from aiohttp import web

from connectors.auth import API_KEY_HEADER, Authenticator, AuthError
from connectors.avro import make_codec
from connectors.config import ApiConfig, Config
from connectors.event_loop import use_event_loop
from connectors.kafka_io import EventPublisher, OutcomeWaiter
from connectors.kafka_security import kafka_access
from connectors.metrics import http_metrics_middleware, metrics_handler
from connectors.postgres import create_pool
from connectors.tracing import current_caller, current_request_id
from domain.access import Action, Decision, Principal, decide, may
from domain.ids import is_uuid
from domain.money import CURRENCIES
from services.json_input import JsonRefused, OversizedInt, is_header_token, parse_instant, parse_json, text_problem
from services.request_ids import request_id_middleware, trace_middleware

log = logging.getLogger(__name__)

MAX_AMOUNT = 10**15  # minor units; anything larger is a typo or an attack, not a payment
# The longest a read may wait for a terminal state (?wait=N); the gateway allows a request
# that long on top of its upstream timeout.
MAX_WAIT_S = 30.0


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    """The one error body; its request id is what an operator greps the logs for."""
    error = {"code": code, "message": message, "field": field, "request_id": current_request_id.get()}
    return web.json_response({"error": error}, status=status)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.field)
        response.headers.update(exc.headers)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "unexpected error; see the service log")


@dataclass(frozen=True)
class Field:
    # "uuid", "string", "amount", "currency", "enum:<a>|<b>", "int", "object", "datetime" (ISO 8601 with
    # its offset); in a query also "number"
    kind: str
    required: bool = True
    max_length: int = 500
    minimum: float | None = None
    maximum: float | None = None
    multiline: bool = False  # free text that may hold tabs and line breaks
    fields: Mapping[str, Field] | None = None  # kind "object": what it holds


JSON_TYPE = "application/json"
# Query numbers in plain ASCII digits: int() and float() would also take " 5", other scripts' digits, "1_0",
# "1e3", "nan" and "inf".
QUERY_NUMBER = {"int": re.compile(r"-?[0-9]{1,15}"), "number": re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,15})?")}


async def read_raw(request: web.Request) -> bytes:
    """The body's bytes if it is uncompressed JSON in UTF-8; otherwise 415 naming the header."""
    if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        raise ApiError(415, "unsupported_encoding", "send the body uncompressed", "Content-Encoding")
    if request.content_type != JSON_TYPE or (request.charset or "utf-8").lower() != "utf-8":
        raise ApiError(415, "unsupported_media_type", f"the body must be {JSON_TYPE} in UTF-8", "Content-Type")
    return await request.read()


def parse_object(raw: bytes) -> dict[str, Any]:
    try:
        body = parse_json(raw)
    except JsonRefused as exc:
        raise ApiError(400, exc.code, exc.message, exc.field) from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "request body must be a JSON object")
    return body


async def read_body(request: web.Request, fields: Mapping[str, Field]) -> dict[str, Any]:
    """The JSON object body, exactly these fields, each checked; errors name the field."""
    return read_fields(parse_object(await read_raw(request)), fields)


def read_fields(
    body: dict[str, Any], fields: Mapping[str, Field], ignore_unknown: bool = False, prefix: str = ""
) -> dict[str, Any]:
    """These fields of `body`, each checked (None when absent and optional); nested names as a.b."""
    if not ignore_unknown:
        for name in body:
            if name not in fields:
                raise ApiError(400, "unknown_field", f"unknown field {prefix + name!r}", prefix + name)
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        if name not in body or body[name] is None:
            if spec.required:
                raise ApiError(400, "missing_field", f"field {prefix + name!r} is required", prefix + name)
            values[name] = None
            continue
        values[name] = check(prefix + name, body[name], spec, ignore_unknown)
    return values


def check(name: str, value: Any, spec: Field, ignore_unknown: bool = False) -> Any:
    if isinstance(value, OversizedInt):
        raise ApiError(422, "invalid_value", f"{name} is a number with too many digits", name)
    if spec.kind == "amount":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(422, "invalid_amount", f"{name} must be an integer number of minor units", name)
        if not 0 < value <= MAX_AMOUNT:
            raise ApiError(422, "invalid_amount", f"{name} must be between 1 and {MAX_AMOUNT}", name)
        return value
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(422, "invalid_type", f"{name} must be an integer", name)
        return in_range(name, value, spec)
    if spec.kind == "object":
        if not isinstance(value, dict):
            raise ApiError(422, "invalid_type", f"{name} must be an object", name)
        return read_fields(value, spec.fields or {}, ignore_unknown, f"{name}.")
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
    if spec.kind == "datetime":
        moment = parse_instant(value)
        if moment is None:
            example = "such as 2026-01-31T12:00:00Z (send '+' as %2B)"
            raise ApiError(422, "invalid_time", f"{name} must be an ISO 8601 time with its offset, {example}", name)
        return moment
    if spec.kind.startswith("enum:"):
        choices = spec.kind[5:].split("|")
        if value not in choices:
            raise ApiError(422, "invalid_value", f"{name} must be one of {', '.join(choices)}", name)
        return value
    if len(value) > spec.max_length:
        raise ApiError(422, "too_long", f"{name} is longer than {spec.max_length} characters", name)
    problem = text_problem(value, spec.multiline)
    if problem is not None:
        raise ApiError(422, "invalid_text", f"{name} must not contain {problem}", name)
    return value


def read_query(request: web.Request, fields: dict[str, Field]) -> dict[str, Any]:
    """The query parameters, exactly these, each once and checked; errors name the parameter."""
    # Judged on the raw bytes: the parsed query drops what is not UTF-8 (an encoded lone
    # surrogate arrives as nothing), so a search for it would run on a value never sent.
    for name, sent in parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True, errors="surrogateescape"):
        problem = text_problem(sent, multiline=False) if name in fields else None
        if problem is not None:
            raise ApiError(422, "invalid_text", f"query parameter {name!r} must not contain {problem}", name)
    values: dict[str, Any] = {}
    for name in request.query:
        if name not in fields:
            raise ApiError(400, "unknown_field", f"unknown query parameter {name!r}", name)
        if len(request.query.getall(name)) > 1:
            raise ApiError(400, "invalid_value", f"query parameter {name!r} given more than once", name)
    for name, spec in fields.items():
        raw = request.query.get(name)
        if raw is None:
            if spec.required:
                raise ApiError(400, "missing_field", f"query parameter {name!r} is required", name)
            values[name] = None
        elif spec.kind in QUERY_NUMBER:
            values[name] = _query_number(name, raw, spec)
        else:
            values[name] = check(name, raw, spec)
    return values


def _query_number(name: str, raw: str, spec: Field) -> float:
    if not QUERY_NUMBER[spec.kind].fullmatch(raw):
        described = "an integer" if spec.kind == "int" else "a decimal number"
        raise ApiError(422, "invalid_value", f"{name} must be {described} in ASCII digits", name)
    return in_range(name, int(raw) if spec.kind == "int" else float(raw), spec)


def in_range(name: str, value: float, spec: Field) -> Any:
    low = spec.minimum if spec.minimum is not None else float("-inf")
    high = spec.maximum if spec.maximum is not None else float("inf")
    if not low <= value <= high:
        raise ApiError(422, "invalid_value", f"{name} must be between {low:g} and {high:g}", name)
    return value


def path_uuid(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not is_uuid(value):
        raise ApiError(422, "invalid_id", f"{name} must be a UUID", name)
    return value.lower()


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= 255 and is_header_token(key)):
        raise ApiError(
            400, "invalid_header", "Idempotency-Key must be 1 to 255 printable ASCII characters", "Idempotency-Key"
        )
    return key


AUTH = web.AppKey("auth", Authenticator)
PRINCIPAL = "principal"
# Webhooks carry the provider's signature instead of a credential.
UNAUTHENTICATED_PREFIXES = ("/api/v1/webhooks/",)


def needs_credentials(path: str) -> bool:
    return path.startswith("/api/") and not path.startswith(UNAUTHENTICATED_PREFIXES)


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if needs_credentials(request.path):
        try:
            principal, _ = request.app[AUTH].authenticate(
                request.headers.get("Authorization"), request.headers.get(API_KEY_HEADER)
            )
        except AuthError as exc:
            log.info("refused %s %s: %s", request.method, request.path, exc)
            raise ApiError(401, "unauthenticated", str(exc)) from None
        request[PRINCIPAL] = principal
        current_caller.set(principal.subject)  # read back by the access line, outside this middleware
    response = await handler(request)
    if response.status == 401:
        response.headers.setdefault("WWW-Authenticate", "Bearer")
    return response


def principal(request: web.Request) -> Principal:
    found: Principal = request[PRINCIPAL]
    return found


def require(request: web.Request, action: Action) -> Principal:
    """403 unless the caller's roles may attempt the action at all."""
    caller = principal(request)
    if not may(caller, action):
        raise ApiError(403, "forbidden", f"your roles ({', '.join(sorted(caller.roles))}) may not {action.value}")
    return caller


def authorize(request: web.Request, action: Action, owner: str | None, not_found: ApiError) -> Principal:
    """403 for a role that may not act, `not_found` for a missing or someone else's resource."""
    caller = require(request, action)
    if decide(caller, action, owner) is not Decision.ALLOW:
        raise not_found
    return caller


def service_middlewares(service: str) -> list[Any]:
    return [
        request_id_middleware,
        http_metrics_middleware(service),
        trace_middleware,
        error_middleware,
        auth_middleware,
    ]


CONFIG = web.AppKey("config", Config)
POOL = web.AppKey("pool", asyncpg.Pool)
PUBLISHER = web.AppKey("publisher", EventPublisher)
OUTCOMES = web.AppKey("outcomes", OutcomeWaiter)


def command_resources(
    principal: str,
    pg_role: str,
    outcome_topics: list[str],
    keys_of: Callable[[dict[str, Any]], list[str]],
    pool_size: int = 10,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """What a service that publishes commands and waits for their outcomes opens and closes:
    a PostgreSQL pool logged in as the service's role, an idempotent producer, and a waiter
    tailing the outcome topics, both connected to Kafka as the service's principal."""

    async def resources(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        codec = make_codec(config.kafka.schema_registry_url or None)
        app[POOL] = await create_pool(config, pg_role, max_size=pool_size)
        access = kafka_access(config, principal)
        app[PUBLISHER] = EventPublisher(access, codec)
        app[OUTCOMES] = OutcomeWaiter(access, outcome_topics, codec, keys_of)
        await app[PUBLISHER].start()
        await app[OUTCOMES].start()
        yield
        await app[OUTCOMES].stop()
        await app[PUBLISHER].stop()
        await app[POOL].close()

    return resources


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


# What one readiness check found wrong, by name; empty when all is well.
Check = Callable[[web.Request], Awaitable[dict[str, Any]]]


def answers(name: str, probe: Callable[[web.Request], Awaitable[Any]]) -> Check:
    """A check that `probe` completes; its failure, whatever it is, is the problem."""

    async def check(request: web.Request) -> dict[str, Any]:
        try:
            await probe(request)
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure
            return {name: str(exc) or type(exc).__name__}
        return {}

    return check


def readiness(
    *checks: Check, details: Callable[[], dict[str, Any]] | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The one readiness page of the HTTP services: 200 "ready" when no check finds a problem,
    else 503 "unready" with the problems; `details` adds what a supervisor may want to read."""

    async def ready(request: web.Request) -> web.Response:
        problems: dict[str, Any] = {}
        for check in checks:
            problems.update(await check(request))
        body = {"status": "unready" if problems else "ready", "problems": problems, **(details() if details else {})}
        return web.json_response(body, status=503 if problems else 200)

    return ready


# An API is ready when PostgreSQL answers a query and Kafka a metadata request.
ready = readiness(
    answers("postgres", lambda request: request.app[POOL].fetchval("SELECT 1")),
    answers("kafka", lambda request: request.app[PUBLISHER].producer.client.fetch_all_metadata()),
)


def service_app(
    service: str,
    config: Config,
    routes: list[web.RouteDef],
    resources: Callable[[web.Application], AsyncIterator[None]],
    openapi: dict[str, Any] | None = None,
) -> web.Application:
    """An aiohttp app with the shared middlewares and the health, readiness and metrics routes."""
    app = web.Application(middlewares=service_middlewares(service), client_max_size=64 * 1024)
    app[CONFIG] = config
    settings: ApiConfig = getattr(config, service.replace("-", "_"))
    app[AUTH] = Authenticator(config.auth, settings.cache_entries)
    app.cleanup_ctx.append(resources)
    app.add_routes(
        [web.get("/health", health), web.get("/ready", ready), web.get("/metrics", metrics_handler), *routes]
    )
    if openapi is not None:
        document = openapi

        async def serve_openapi(_: web.Request) -> web.Response:
            return web.json_response(document)

        app.router.add_get("/openapi.json", serve_openapi)
    return app


def serve(app: web.Application, config: Config, name: str, host: str, port: int) -> None:
    logger = logging.getLogger(name)
    use_event_loop(config)
    # access_log=None: services.request_ids writes the access lines, with the caller and request id.
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        print=lambda _: logger.info("%s on http://%s:%s", name, host, port),
    )
