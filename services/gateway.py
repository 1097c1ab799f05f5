"""The API gateway: one port in front of the payment and wallet APIs.

It decides on one canonical path and forwards exactly that path (services/gateway_rules.py),
authenticates (the services check again: nothing behind it trusts the network), limits each
credential to a token bucket (429 with Retry-After) and to a few parked long-polls, keeps
long-polls and ordinary requests on separate upstream connection pools, caps body size and
upstream time, and gives every request an X-Request-Id that the services see.

A small aiohttp proxy rather than nginx: nginx cannot verify our kid-selected JWTs or
hash API keys without extra modules, and a per-credential limit needs the verified
subject, not a header anyone can set. It shares the config, the verifier and the test
harness with the services.

    python -m services.gateway
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import yarl
from aiohttp import web

from connectors.auth import API_KEY_HEADER, Authenticator, AuthError
from connectors.config import Config, GatewayConfig, load_config
from connectors.event_loop import use_event_loop
from connectors.logs import setup_logging
from connectors.metrics import (
    GATEWAY_PARKED_WAITS,
    GATEWAY_REFUSALS,
    HTTP_LATENCY,
    HTTP_REQUESTS,
    metrics_handler,
)
from connectors.tracing import current_caller
from domain.access import Principal
from services.console_route import console_route
from services.gateway_docs import docs_context, docs_routes
from services.gateway_rules import WaitSlots, asks_to_wait, canonical_path, encoded_path, single_header
from services.http import MAX_WAIT_S, ApiError, answers, error_response, needs_credentials, readiness
from services.request_ids import REQUEST_ID_HEADER, log_access, request_context, request_id_of
from services.system_health import system_health

log = logging.getLogger("gateway")

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
    )
)
PAYMENT_PREFIXES = ("/api/v1/payments", "/api/v1/webhooks/")
WALLET_PREFIXES = ("/api/v1/wallet", "/api/v1/movement/")
MAX_BUCKETS = 100_000  # idle buckets are dropped past this, so many credentials cannot fill memory
# Metrics labels stay few whatever callers send: the API family of a path, known methods.
ROUTE_FAMILIES = frozenset({"payments", "webhooks", "wallet", "wallets", "movement"})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
HEALTH_PATH = "/api/v1/system/health"  # the gateway's own route, not forwarded
READY_TIMEOUT_S = 2.0  # an upstream slower than this to say it is ready counts as not ready


@dataclass
class Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """A token bucket per credential: `burst` at once, then `rate_per_s`."""

    rate_per_s: float
    burst: int
    buckets: dict[str, Bucket] = field(default_factory=dict)

    def take(self, credential: str, now: float) -> float:
        """0 when allowed, else the seconds until a request would be."""
        bucket = self.buckets.get(credential)
        if bucket is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self._forget_full(now)
            bucket = self.buckets[credential] = Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate_per_s)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate_per_s

    def _forget_full(self, now: float) -> None:
        refill_s = self.burst / self.rate_per_s
        self.buckets = {k: b for k, b in self.buckets.items() if now - b.at < refill_s}


def upstream_for(config: GatewayConfig, path: str) -> str | None:
    if path == "/api/v1/payments" or path.startswith(PAYMENT_PREFIXES):
        return config.payment_upstream
    if path.startswith(WALLET_PREFIXES):
        return config.wallet_upstream
    return None


def upstream_timeout_s(settings: GatewayConfig, wait: str | None) -> float:
    """The upstream timeout plus the wait a request asks for (?wait=N), up to the longest a
    service allows: a read told to wait 25 s must not be cut off at 10."""
    try:
        asked = float(wait) if wait is not None else 0.0
    except ValueError:
        asked = 0.0  # the service refuses it at once
    return settings.upstream_timeout_s + (min(asked, MAX_WAIT_S) if asked > 0 else 0.0)


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
LIMITER = web.AppKey("limiter", RateLimiter)
WAITS = web.AppKey("waits", WaitSlots)
SETTINGS = web.AppKey("settings", GatewayConfig)
SYSTEM = web.AppKey("system", Config)  # the whole configuration: the health checks ask every service
REQUEST_ID = web.RequestKey("request_id", str)
ROUTE = web.RequestKey("route", str)  # the request's metrics label, once its path is known


class Pools:
    """A client session per upstream and kind (ordinary or long-poll), each with its own
    connection limit: long-polls parked by one caller cannot take the connections that every
    other request needs, and a slow wallet API cannot take the payment API's."""

    def __init__(self, settings: GatewayConfig) -> None:
        self.sessions = {
            (upstream, waiting): aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=settings.max_waits if waiting else settings.upstream_connections),
                auto_decompress=False,
            )
            for upstream in (settings.payment_upstream, settings.wallet_upstream)
            for waiting in (False, True)
        }

    def session(self, upstream: str, waiting: bool) -> aiohttp.ClientSession:
        return self.sessions[(upstream, waiting)]

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()


POOLS = web.AppKey("pools", Pools)


def route_label(path: str) -> str:
    parts = path.split("/", 4)
    if len(parts) > 3 and parts[1:3] == ["api", "v1"] and parts[3] in ROUTE_FAMILIES:
        return "/api/v1/" + parts[3]
    return "unrouted"


def refusal(refused: ApiError) -> web.Response:
    GATEWAY_REFUSALS.labels(refused.code).inc()
    response = error_response(refused.status, refused.code, refused.message, refused.field)
    response.headers.update(refused.headers)
    return response


@web.middleware
async def gateway_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Request ids, aiohttp's own refusals as JSON, and the request metrics."""
    started = time.perf_counter()
    request_id = request_id_of(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID] = request_id
    with request_context(request_id):
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # e.g. 413 from client_max_size, 405 on /health
            code = exc.reason.lower().replace(" ", "_")
            response = refusal(ApiError(exc.status, code, exc.reason))
        log_access(request, response.status, started)
    response.headers[REQUEST_ID_HEADER] = request_id
    resource = request.match_info.route.resource
    route = request.get(ROUTE) or (resource.canonical if resource is not None else "unmatched")
    method = request.method if request.method in METHODS else "OTHER"
    HTTP_REQUESTS.labels("gateway", method, route, str(response.status)).inc()
    HTTP_LATENCY.labels("gateway", method, route).observe(time.perf_counter() - started)
    return response


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def upstream_ready(upstream: Callable[[GatewayConfig], str]) -> Callable[[web.Request], Awaitable[None]]:
    async def probe(request: web.Request) -> None:
        base = upstream(request.app[SETTINGS])
        timeout = aiohttp.ClientTimeout(total=READY_TIMEOUT_S)
        async with request.app[POOLS].session(base, False).get(base + "/ready", timeout=timeout) as response:
            if response.status != 200:
                raise RuntimeError(f"{base}/ready answered {response.status}")

    return probe


ready = readiness(
    answers("payment_api", upstream_ready(lambda s: s.payment_upstream)),
    answers("wallet_api", upstream_ready(lambda s: s.wallet_upstream)),
)


def credential_of(request: web.Request, path: str) -> str:
    """Who the request counts against: the verified credential, or the address for webhooks."""
    if not needs_credentials(path):
        return "ip:" + (request.remote or "unknown")  # webhooks: signed, limited by address
    return caller_of(request, path)[1]


def caller_of(request: web.Request, path: str) -> tuple[Principal, str]:
    """The verified principal and credential, or 401."""
    authorization = single_header(request.headers.getall("Authorization", []), "Authorization")
    api_key = single_header(request.headers.getall(API_KEY_HEADER, []), API_KEY_HEADER)
    try:
        principal, credential = request.app[AUTHENTICATOR].authenticate(authorization, api_key)
    except AuthError as exc:
        log.info("refused %s %s: %s", request.method, path, exc)
        raise ApiError(401, "unauthenticated", str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    current_caller.set(principal.subject)
    return principal, credential


def limit(request: web.Request, credential: str) -> None:
    wait_s = request.app[LIMITER].take(credential, time.monotonic())
    if wait_s > 0:
        message = "too many requests for this credential; retry later"
        raise ApiError(429, "rate_limited", message, headers={"Retry-After": str(max(1, math.ceil(wait_s)))})


def admit(request: web.Request) -> tuple[str, str, str]:
    """The canonical path, its upstream and the credential, once every rule lets it through."""
    request[ROUTE] = "unrouted"  # a refused path names no route
    path = canonical_path(request.rel_url.raw_path)
    request[ROUTE] = route_label(path)
    upstream = upstream_for(request.app[SETTINGS], path)
    if upstream is None:
        raise ApiError(404, "not_found", "no such route")
    credential = credential_of(request, path)
    limit(request, credential)
    if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        # Refused, not decompressed: aiohttp would inflate it and forward the header with the
        # plain bytes, and a few compressed KiB can inflate to far more than the body limit.
        message = "send the body uncompressed"
        raise ApiError(415, "unsupported_encoding", message, "Content-Encoding", {"Accept-Encoding": "identity"})
    return path, upstream, credential


async def proxy(request: web.Request) -> web.StreamResponse:
    try:
        path, upstream, credential = admit(request)
    except ApiError as refused:
        return refusal(refused)
    waiting = asks_to_wait(request.query.getall("wait", []))
    if not waiting:
        return await forward(request, upstream, path, waiting)
    waits = request.app[WAITS]
    full = waits.take(credential)
    if full is not None:
        return refusal(full)
    GATEWAY_PARKED_WAITS.set(waits.parked)
    try:
        # A client that goes away cancels this handler (handler_cancellation), which leaves
        # the upstream request and gives its connection and the slot back.
        return await forward(request, upstream, path, waiting)
    finally:
        waits.give_back(credential)
        GATEWAY_PARKED_WAITS.set(waits.parked)


async def system_health_route(request: web.Request) -> web.StreamResponse:
    """The system's health for operators and admins (services/system_health.py), asked afresh
    on every call and never cached: 200 healthy, 503 unhealthy, the checks in the body."""
    request[ROUTE] = HEALTH_PATH
    try:
        caller, credential = caller_of(request, HEALTH_PATH)
        if not caller.privileged:
            raise ApiError(403, "forbidden", "only an operator or an admin may see the system's health")
        limit(request, credential)
    except ApiError as refused:
        response = refusal(refused)
    else:
        report = await system_health(request.app[SYSTEM])
        response = web.json_response(report.json(), status=200 if report.healthy else 503)
    response.headers["Cache-Control"] = "no-store"
    return response


async def forward(request: web.Request, upstream: str, path: str, waiting: bool) -> web.StreamResponse:
    """The canonical path and the query, sent on the pool for its kind."""
    settings = request.app[SETTINGS]
    body = await request.read()  # bounded by client_max_size: larger bodies get 413
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
    headers["X-Forwarded-For"] = request.remote or ""
    # The query goes as it came: the gateway read it with the same parser as the service will.
    query = request.rel_url.raw_query_string
    url = yarl.URL(upstream + encoded_path(path) + (f"?{query}" if query else ""), encoded=True)
    try:
        async with (
            request.app[POOLS]
            .session(upstream, waiting)
            .request(
                request.method,
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=upstream_timeout_s(settings, request.query.get("wait"))),
            ) as upstream_response
        ):
            payload = await upstream_response.read()
            out = web.Response(status=upstream_response.status, body=payload)
            for name, value in upstream_response.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    out.headers.add(name, value)
            return out
    except TimeoutError:
        return error_response(504, "upstream_timeout", "the service did not answer in time")
    except aiohttp.ClientError as exc:
        log.warning("upstream %s unreachable: %r", upstream, exc)
        return error_response(502, "upstream_unavailable", "the service is not reachable")


def create_app(config: Config) -> web.Application:
    settings = config.gateway
    app = web.Application(middlewares=[gateway_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[SYSTEM] = config
    app[AUTHENTICATOR] = Authenticator(config.auth, settings.cache_entries)
    app[LIMITER] = RateLimiter(settings.rate_per_s, settings.burst)
    app[WAITS] = WaitSlots(settings.max_waits_per_credential, settings.max_waits)

    async def pools(app: web.Application) -> AsyncIterator[None]:
        app[POOLS] = Pools(settings)
        yield
        await app[POOLS].close()

    app.cleanup_ctx.append(pools)
    app.cleanup_ctx.append(docs_context(settings))
    app.add_routes(
        [
            web.get("/health", health),
            web.get("/ready", ready),
            web.get("/metrics", metrics_handler),
            web.get(HEALTH_PATH, system_health_route),
            *docs_routes(),  # the APIs' documents and a page to read them; no credential
            web.route("*", "/console/{tail:.*}", console_route(config)),  # the console checks its own session
            # Everything else, whatever its path, meets the gateway's own rules in proxy.
            web.route("*", "/{tail:.*}", proxy),
        ]
    )
    return app


def main() -> None:
    config = load_config()
    setup_logging(config, "gateway")
    use_event_loop(config)
    settings = config.gateway
    web.run_app(
        create_app(config),
        host=settings.host,
        port=settings.port,
        handler_cancellation=True,  # a caller that hangs up releases its upstream request
        access_log=None,  # services.request_ids writes the access lines
        print=lambda _: log.info("gateway on http://%s:%s", settings.host, settings.port),
    )


if __name__ == "__main__":
    main()
