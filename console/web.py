"""The operators' web console: server-rendered pages behind a login, served at /console/ through
the gateway (services/console_route.py) and on its own port.

A separate process rather than part of the gateway: it reads the whole log and every view, and
holds the `console` and `operator` credentials that a dead-letter replay needs; the gateway, the
one public door, holds none of that, and a slow trace never shares its event loop.

The login takes a bearer token or an API key (connectors/auth.py) and gives a session cookie of
`web_console.session_ttl_s`: HttpOnly, SameSite=Strict, signed with a key derived from the
environment's JWT signing key (so the cookie is no API credential). A POST also needs the
session's CSRF token.

    python -m console.web
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from io import StringIO

import aiohttp
import asyncpg
from aiohttp import web

from connectors.auth import Authenticator, AuthError
from connectors.config import Config, load_config
from connectors.credentials import CONSOLE
from connectors.logs import setup_logging
from connectors.metrics import http_metrics_middleware, metrics_handler
from connectors.postgres import create_pool
from connectors.topics import ALL_TOPICS
from console import web_ops_pages as ops
from console import web_pages as pages
from console import web_reads as reads
from console.dlq import dead_letters, dlq_replay
from console.sources import ConsoleError, Log
from domain.ids import is_uuid
from services.system_health import system_health

log = logging.getLogger("web-console")

COOKIE = "console_session"
OPEN_PATHS = frozenset({"/console/login", "/health", "/ready", "/metrics"})
SECURITY_HEADERS = {
    # Nothing is fetched from anywhere, nothing runs: the pages are plain HTML with inline CSS.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
TOPICS = frozenset(t.name for t in ALL_TOPICS)


@dataclass(frozen=True)
class Session:
    subject: str
    roles: list[str]
    expires: int
    nonce: str


def session_key(config: Config) -> bytes:
    """Derived from the signing JWT key: rotating that key ends every session, and a cookie is
    never a valid bearer token."""
    key = config.auth.jwt_keys[config.auth.signing_kid].encode()
    return hmac.new(key, b"web-console-session", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def seal(key: bytes, session: Session) -> str:
    body = _b64(json.dumps([session.subject, session.roles, session.expires, session.nonce]).encode())
    return body + "." + _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())


def unseal(key: bytes, cookie: str, now: float) -> Session | None:
    """The session the cookie holds, if this environment signed it and it has not expired."""
    body, _, signature = cookie.partition(".")
    expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return None
    try:
        subject, roles, expires, nonce = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        return None
    return Session(subject, roles, expires, nonce) if expires > now else None


def csrf_token(key: bytes, session: Session) -> str:
    return hmac.new(key, b"csrf:" + session.nonce.encode(), hashlib.sha256).hexdigest()


CONFIG = web.AppKey("config", Config)
KEY = web.AppKey("session_key", bytes)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
POOL = web.AppKey("pool", asyncpg.Pool)
HTTP = web.AppKey("http", aiohttp.ClientSession)
SESSION = web.RequestKey("session", Session)


def html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=SECURITY_HEADERS)


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})


def problem(request: web.Request, title: str, message: str, status: int) -> web.Response:
    session = request.get(SESSION)
    body = pages.Safe(f'<p class="bad" id="problem">{pages.h(message)}</p>')
    subject, csrf = (session.subject, csrf_token(request.app[KEY], session)) if session else (None, "")
    return html(pages.layout(title, body, subject, csrf), status)


@web.middleware
async def session_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every page but the login needs a live session; every POST its CSRF token."""
    if request.path in OPEN_PATHS:
        return await handler(request)
    session = unseal(request.app[KEY], request.cookies.get(COOKIE, ""), time.time())
    if session is None:
        return see_other("/console/login")
    request[SESSION] = session
    if request.method == "POST":
        form = await request.post()
        if not hmac.compare_digest(str(form.get("csrf", "")), csrf_token(request.app[KEY], session)):
            return problem(request, "Refused", "the form's CSRF token is missing or stale: reload the page", 403)
    try:
        return await handler(request)
    except ConsoleError as exc:
        return problem(request, "Unavailable", str(exc), 503)


def who(request: web.Request) -> tuple[str, str]:
    session = request[SESSION]
    return session.subject, csrf_token(request.app[KEY], session)


async def login_form(_: web.Request) -> web.Response:
    return html(pages.login_page())


async def login(request: web.Request) -> web.Response:
    credential = str((await request.post()).get("credential", "")).strip()
    # A JWT has three dot-separated parts; anything else is taken as an API key.
    as_token = credential.count(".") == 2
    try:
        principal, _ = request.app[AUTHENTICATOR].authenticate(
            f"Bearer {credential}" if as_token else None, None if as_token else credential
        )
    except AuthError as exc:
        return html(pages.login_page(f"refused: {exc}"), 401)
    if not principal.privileged:
        log.info("console login refused to %s (roles %s)", principal.subject, sorted(principal.roles))
        return html(pages.forbidden_page(principal.subject, principal.roles), 403)
    ttl = request.app[CONFIG].web_console.session_ttl_s
    session = Session(principal.subject, sorted(principal.roles), int(time.time()) + ttl, secrets.token_hex(16))
    log.info("console login by %s", principal.subject)
    response = see_other("/console/")
    response.set_cookie(
        COOKIE, seal(request.app[KEY], session), max_age=ttl, path="/console/", httponly=True,
        samesite="Strict", secure=request.secure,
    )  # fmt: skip
    return response


async def logout(_: web.Request) -> web.Response:
    response = see_other("/console/login")
    response.del_cookie(COOKIE, path="/console/")
    return response


async def search(request: web.Request) -> web.Response:
    query = {k: request.query[k].strip() for k in ("id", "user_id", "status") if request.query.get(k, "").strip()}
    try:
        found = await reads.search_payments(request.app[POOL], query)
    except reads.Refused as exc:
        return problem(request, "Payments", str(exc), 400)
    return html(pages.search_page(*who(request), query, found))


async def payment(request: web.Request) -> web.Response:
    payment_id = request.match_info["payment_id"].lower()
    if not is_uuid(payment_id):
        return problem(request, "Payment", "payment_id must be a UUID", 400)
    found = await reads.payment_with_history(request.app[POOL], payment_id)
    if found is None:
        return problem(request, "Payment", f"no payment {payment_id} in the views", 404)
    session = request[SESSION]
    state = await reads.worker_state(
        request.app[HTTP], request.app[CONFIG], "payments", payment_id, session.subject, session.roles
    )
    entries = await reads.timeline_of(request.app[CONFIG], payment_id)
    return html(pages.payment_page(*who(request), found, entries, state))


async def wallet(request: web.Request) -> web.Response:
    wallet_id = request.match_info["wallet_id"].lower()
    if not is_uuid(wallet_id):
        return problem(request, "Wallet", "wallet_id must be a UUID", 400)
    found = await reads.wallet_with_movements(request.app[POOL], wallet_id)
    if found is None:
        return problem(request, "Wallet", f"no wallet {wallet_id} in the views", 404)
    session = request[SESSION]
    state = await reads.worker_state(
        request.app[HTTP], request.app[CONFIG], "wallets", wallet_id, session.subject, session.roles
    )
    return html(pages.wallet_page(*who(request), *found, state))


async def event(request: web.Request) -> web.Response:
    topic = request.match_info["topic"]
    partition, offset = int(request.match_info["partition"]), int(request.match_info["offset"])
    if topic not in TOPICS:
        return problem(request, "Event", f"topic must be one of the system's topics, not {topic!r}", 400)
    entry = await reads.event_at(request.app[CONFIG], topic, partition, offset)
    if entry is None:
        return problem(request, "Event", f"no event at {topic}[{partition}]@{offset}", 404)
    return html(pages.event_page(*who(request), entry, int(time.time() * 1000)))


async def dlq(request: web.Request, outcome: str = "") -> web.Response:
    async with Log(request.app[CONFIG]) as log_:
        letters = await dead_letters(log_)
    return html(ops.dlq_page(*who(request), letters, int(time.time() * 1000), outcome))


async def replay(request: web.Request) -> web.Response:
    form = await request.post()
    try:
        partition, offset = int(str(form["partition"])), int(str(form["offset"]))
    except (KeyError, ValueError):
        return problem(request, "Dead letters", "partition and offset must be whole numbers", 400)
    out = StringIO()
    try:
        await dlq_replay(request.app[CONFIG], [offset], partition, False, out)
    except ConsoleError as exc:
        out.write(f"not replayed: {exc}")
    log.info("dead letter [%s]@%s replayed by %s: %s", partition, offset, request[SESSION].subject, out.getvalue())
    return await dlq(request, out.getvalue())


async def violations(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    try:
        found = await reads.violations(request.app[HTTP], config)
    except ConsoleError as exc:
        return html(ops.violations_page(*who(request), [], {}, 0, str(exc)), 503)
    newest = [(v["at"]["topic"], v["at"]["partition"], v["at"]["offset"]) for v in found[-reads.VIOLATION_TIMES :]]
    times = await reads.event_times(config, newest)
    return html(ops.violations_page(*who(request), found, times, int(time.time() * 1000)))


async def health_page(request: web.Request) -> web.Response:
    return html(ops.health_page(*who(request), await system_health(request.app[CONFIG])))


async def alive(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(config: Config) -> web.Application:
    app = web.Application(
        middlewares=[http_metrics_middleware("web-console"), session_middleware], client_max_size=64 * 1024
    )
    app[CONFIG] = config
    app[KEY] = session_key(config)
    app[AUTHENTICATOR] = Authenticator(config.auth)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        app[POOL] = await create_pool(config, CONSOLE, max_size=4)
        app[HTTP] = aiohttp.ClientSession()
        yield
        await app[HTTP].close()
        await app[POOL].close()

    app.cleanup_ctx.append(resources)
    app.add_routes(
        [
            web.get("/health", alive),
            web.get("/ready", alive),
            web.get("/metrics", metrics_handler),  # on the console's own port only: the gateway passes /console/
            web.get("/console/login", login_form),
            web.post("/console/login", login),
            web.post("/console/logout", logout),
            web.get("/console/", search),
            web.get("/console/payments/{payment_id}", payment),
            web.get("/console/wallets/{wallet_id}", wallet),
            web.get("/console/events/{topic}/{partition:[0-9]{1,6}}/{offset:[0-9]{1,18}}", event),
            web.get("/console/dlq", dlq),
            web.post("/console/dlq/replay", replay),
            web.get("/console/violations", violations),
            web.get("/console/health", health_page),
        ]
    )
    return app


def main() -> None:
    config = load_config()
    setup_logging(config, "web-console")
    settings = config.web_console
    web.run_app(
        create_app(config),
        host=settings.host,
        port=settings.port,
        print=lambda _: log.info("web console on http://%s:%s/console/", settings.host, settings.port),
    )


if __name__ == "__main__":
    main()
