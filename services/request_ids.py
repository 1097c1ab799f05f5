"""What each request carries, shared by the APIs and the gateway: its id, its access line, its trace.

Every request gets an id: the caller's X-Request-Id when it is a safe one (the gateway always
sends one), else a new uuid4. It is answered in the X-Request-Id header, put in every error body
(services.http.error_response), on every log line of the request (connectors.logs) and on every
event the request publishes (connectors.tracing.outgoing_headers), whence the workers carry it
on. One access line per request says method, route, status, latency, caller and request id.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from aiohttp import web

from connectors.otel import exporting, span
from connectors.tracing import (
    TRACEPARENT_HEADER,
    continue_or_start,
    current_caller,
    current_request_id,
    current_traceparent,
    is_request_id,
)
from domain.ids import uuid_text

REQUEST_ID_HEADER = "X-Request-Id"
UUID_SEGMENT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

access_log = logging.getLogger("access")


def request_id_of(given: str | None) -> str:
    """The caller's id if it cannot smuggle anything into logs or headers, else a new one."""
    return given if given is not None and is_request_id(given) else new_request_id()


def new_request_id() -> str:
    """A version-4 UUID from the non-cryptographic generator: a request id must be unique, not
    secret (a caller may choose its own), and uuid4's read of the OS's entropy pool showed in
    the API's profile. Payment and movement ids still come from uuid4."""
    return uuid_text(random.getrandbits(128), 4)


def path_template(path: str) -> str:
    """A path with its ids replaced, for a log line that groups and leaks nothing: a raw
    payment id in every access line is a join key nobody asked for."""
    return "/".join("{id}" if UUID_SEGMENT.fullmatch(part) else part for part in path.split("/"))


def route_of(request: web.Request) -> str:
    """The matched route's template, or the path with its ids replaced."""
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else None
    if canonical is None or "{tail" in canonical:  # the gateway's catch-all names no route
        return path_template(request.path)
    return canonical


@contextmanager
def request_context(request_id: str) -> Iterator[None]:
    """The request id, and a caller slot the authentication fills, for everything in the block."""
    id_token = current_request_id.set(request_id)
    caller_token = current_caller.set(None)
    try:
        yield
    finally:
        current_caller.reset(caller_token)
        current_request_id.reset(id_token)


def log_access(request: web.Request, status: int, started: float) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    route = route_of(request)
    method = request.method
    # The record made directly: Logger.info would walk the stack for a source line nobody reads.
    record = access_log.makeRecord(
        access_log.name,
        logging.INFO,
        __file__,
        0,
        "%s %s %d %.1f ms",
        (method, route, status, latency_ms),
        None,
        extra={"method": method, "route": route, "status": status, "latency_ms": latency_ms},
    )
    access_log.handle(record)


@web.middleware
async def request_id_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The outermost middleware of an API: the id for everything inside, echoed and logged."""
    started = time.perf_counter()
    request_id = request_id_of(request.headers.get(REQUEST_ID_HEADER))
    # request_context() inlined: a generator context manager per request showed in the profile.
    id_token = current_request_id.set(request_id)
    caller_token = current_caller.set(None)
    status = 500
    try:
        response = await handler(request)
        status = response.status
    except web.HTTPException as exc:  # redirects and the like pass through
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        log_access(request, status, started)
        current_caller.reset(caller_token)
        current_request_id.reset(id_token)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


@web.middleware
async def trace_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Continues the caller's W3C trace (or starts one) for everything this request publishes."""
    parent = request.headers.get(TRACEPARENT_HEADER)
    if not exporting():  # no span to open: only the context travels on
        return await _traced(request, handler, continue_or_start(parent))
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    with span(f"{request.method} {route}", parent) as traceparent:
        return await _traced(request, handler, traceparent)


async def _traced(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], traceparent: str
) -> web.StreamResponse:
    token = current_traceparent.set(traceparent)
    try:
        response = await handler(request)
    finally:
        current_traceparent.reset(token)
    response.headers[TRACEPARENT_HEADER] = traceparent
    return response
