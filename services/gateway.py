"""The API gateway: one port in front of the payment and wallet APIs.

It authenticates (the services check again: nothing behind it trusts the network),
limits each credential to a token bucket (429 with Retry-After), caps body size and
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
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from connectors.auth import API_KEY_HEADER, Authenticator, AuthError
from connectors.config import Config, GatewayConfig, load_config
from connectors.logs import setup_logging
from services.http import MAX_WAIT_S, error_response, needs_credentials, serve

log = logging.getLogger("gateway")

REQUEST_ID_HEADER = "X-Request-Id"
# A caller's own request id is kept only if it cannot smuggle anything into logs.
CALLER_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
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
CLIENT = web.AppKey("client", aiohttp.ClientSession)
SETTINGS = web.AppKey("settings", GatewayConfig)


@web.middleware
async def request_id_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = given if CALLER_REQUEST_ID.match(given) else str(uuid.uuid4())
    request["request_id"] = request_id
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # e.g. 413 from client_max_size
        response = error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def proxy(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    upstream = upstream_for(settings, request.path)
    if upstream is None:
        return error_response(404, "not_found", "no such route")
    if needs_credentials(request.path):
        try:
            principal, credential = request.app[AUTHENTICATOR].authenticate(
                request.headers.get("Authorization"), request.headers.get(API_KEY_HEADER)
            )
        except AuthError as exc:
            log.info("refused %s %s [%s]: %s", request.method, request.path, request["request_id"], exc)
            response = error_response(401, "unauthenticated", str(exc))
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        credential_id = credential
        log.debug("%s %s by %s", request.method, request.path, principal.subject)
    else:
        credential_id = "ip:" + (request.remote or "unknown")  # webhooks: signed, limited by address
    wait_s = request.app[LIMITER].take(credential_id, time.monotonic())
    if wait_s > 0:
        response = error_response(429, "rate_limited", "too many requests for this credential; retry later")
        response.headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
        return response
    if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        # Refused, not decompressed: aiohttp would inflate it and forward the header with the
        # plain bytes, and a few compressed KiB can inflate to far more than the body limit.
        response = error_response(415, "unsupported_encoding", "send the body uncompressed", "Content-Encoding")
        response.headers["Accept-Encoding"] = "identity"
        return response
    body = await request.read()  # bounded by client_max_size: larger bodies get 413
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    headers[REQUEST_ID_HEADER] = request["request_id"]
    headers["X-Forwarded-For"] = request.remote or ""
    try:
        async with request.app[CLIENT].request(
            request.method,
            upstream + request.rel_url.path_qs,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=upstream_timeout_s(settings, request.query.get("wait"))),
        ) as upstream_response:
            payload = await upstream_response.read()
            out = web.Response(status=upstream_response.status, body=payload)
            for name, value in upstream_response.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    out.headers.add(name, value)
            return out
    except TimeoutError:
        return error_response(504, "upstream_timeout", "the service did not answer in time")
    except aiohttp.ClientError as exc:
        log.warning("upstream %s unreachable [%s]: %r", upstream, request["request_id"], exc)
        return error_response(502, "upstream_unavailable", "the service is not reachable")


def create_app(config: Config) -> web.Application:
    settings = config.gateway
    app = web.Application(middlewares=[request_id_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[AUTHENTICATOR] = Authenticator(config.auth)
    app[LIMITER] = RateLimiter(settings.rate_per_s, settings.burst)

    async def client(app: web.Application) -> AsyncIterator[None]:
        app[CLIENT] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app[CLIENT].close()

    app.cleanup_ctx.append(client)
    app.add_routes([web.get("/health", health), web.route("*", "/api/{tail:.*}", proxy)])
    return app


def main() -> None:
    config = load_config()
    setup_logging(config, "gateway")
    serve(create_app(config), "gateway", config.gateway.host, config.gateway.port)


if __name__ == "__main__":
    main()
