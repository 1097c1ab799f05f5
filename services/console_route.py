"""The gateway's route to the operators' web console (console/web.py, its own process).

The console checks its own session cookie and CSRF token, so the gateway passes /console/...
through as it came, without asking for an API credential. Operators are few: a client
session per request keeps the gateway free of another long-lived pool.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp
import yarl
from aiohttp import web

from connectors.config import Config

log = logging.getLogger("gateway")

PASSED_REQUEST_HEADERS = ("Cookie", "Content-Type", "Accept", "User-Agent", "X-Request-Id")
PASSED_ANSWER_HEADERS = (
    "Content-Type",
    "Location",
    "Set-Cookie",
    "Cache-Control",
    "Content-Security-Policy",
    "X-Content-Type-Options",
    "Referrer-Policy",
)
CONSOLE_TIMEOUT_S = 30.0  # a payment's page reads its whole history from the log


def console_route(config: Config) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    base = config.web_console.url

    async def to_console(request: web.Request) -> web.StreamResponse:
        headers = {name: request.headers[name] for name in PASSED_REQUEST_HEADERS if name in request.headers}
        headers["X-Forwarded-For"] = request.remote or ""
        url = yarl.URL(base + request.rel_url.raw_path_qs, encoded=True)
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CONSOLE_TIMEOUT_S)) as session,
                session.request(
                    request.method, url, data=await request.read(), headers=headers, allow_redirects=False
                ) as answer,
            ):
                out = web.Response(status=answer.status, body=await answer.read())
                for name in PASSED_ANSWER_HEADERS:
                    for value in answer.headers.getall(name, []):
                        out.headers.add(name, value)
                return out
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("web console at %s unreachable: %r", base, exc)
            return web.Response(status=502, text="the web console is not reachable", content_type="text/plain")

    return to_console
