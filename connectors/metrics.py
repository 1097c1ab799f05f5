"""Prometheus metrics shared by every process (one registry per process).

Names follow Prometheus conventions; labels stay low-cardinality (routes are the
route templates, never concrete ids).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests served", ["service", "method", "route", "status"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REQUESTS_SHED = Counter(
    "http_requests_shed_total", "Commands refused at capacity (503 overloaded) before any work", ["endpoint"]
)
EVENTS_PROCESSED = Counter("events_processed_total", "Events handled by an agent", ["agent", "event_type", "outcome"])
EVENT_LATENCY = Histogram(
    "event_processing_seconds",
    "Time an agent spends on one event",
    ["agent"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
PROVIDER_CALLS = Counter(
    "provider_calls_total",
    "Charges and refunds sent to a provider: accepted, rejected (final) or unavailable (after every attempt)",
    ["provider", "operation", "outcome"],
)
DEAD_LETTERS = Counter("dead_letters_total", "Messages written to the dead-letter topic", ["consumer", "error_type"])
PROCESSING_PAUSES = Counter(
    "processing_pauses_total", "Times a partition paused on an infrastructure failure", ["consumer", "topic"]
)
PROCESSING_RETRIES = Counter(
    "processing_retries_total",
    "Handler retries, by cause: the message's own fault or the infrastructure's",
    ["consumer", "topic", "cause"],
)
DELIVERY_GAPS = Counter(
    "delivery_gaps_healed_total",
    "Offsets the consumer library skipped that were read back and processed in order",
    ["consumer", "topic"],
)
CONSUMER_LAG = Gauge(
    "consumer_lag_messages", "Messages behind the end of the partition", ["group", "topic", "partition"]
)
CONSUMER_STALLED_SECONDS = Gauge(
    "consumer_stalled_seconds",
    "How long a partition behind its end has not advanced (0 when caught up)",
    ["group", "topic", "partition"],
)
PROJECTION_LAG_MESSAGES = Gauge(
    "projection_lag_messages",
    "Messages of the log not yet in the PostgreSQL views",
    ["projection", "topic", "partition"],
)
PROJECTION_OLDEST_UNPROJECTED_SECONDS = Gauge(
    "projection_oldest_unprojected_age_seconds",
    "Age of the oldest event of a partition not yet in the views (0 when caught up)",
    ["projection", "topic", "partition"],
)
PROJECTION_LAG_SECONDS = Gauge(
    "projection_lag_seconds", "Age of the newest event applied to the views when applied", ["projection"]
)
PAYMENTS_TERMINAL = Counter("payments_terminal_total", "Payments that reached a terminal status", ["status"])
REFUNDS_TERMINAL = Counter(
    "refunds_total",
    "Refunds that reached an outcome: succeeded, failed (reason = its reason code), or reconciled"
    " (a success that arrived after the refund was declared failed)",
    ["outcome", "reason"],
)
PROVIDER_MISMATCHES = Counter(
    "provider_amount_mismatches_total",
    "Provider reports whose amount or currency differs from what was asked (kind: charge or refund)",
    ["kind"],
)
SAGA_DURATION = Histogram(
    "payment_saga_duration_seconds",
    "From payment creation to its terminal event",
    ["status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def exposition() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


async def metrics_handler(_: web.Request) -> web.Response:
    body, content_type = exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


def http_metrics_middleware(service: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    # The labelled children, looked up once each: labels() takes a lock and builds a key per call.
    counters: dict[tuple[str, str, int], Counter] = {}
    latencies: dict[tuple[str, str], Histogram] = {}

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            method = request.method
            counter = counters.get((method, route, status))
            if counter is None:
                counter = counters[method, route, status] = HTTP_REQUESTS.labels(service, method, route, str(status))
            latency = latencies.get((method, route))
            if latency is None:
                latency = latencies[method, route] = HTTP_LATENCY.labels(service, method, route)
            counter.inc()
            latency.observe(time.perf_counter() - started)

    return middleware


GATEWAY_REFUSALS = Counter(
    "gateway_refusals_total", "Requests the gateway answered itself without forwarding, by reason", ["reason"]
)
GATEWAY_PARKED_WAITS = Gauge("gateway_parked_long_polls", "Long-polls (?wait>0) the gateway holds open upstream now")
