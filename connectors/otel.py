"""OpenTelemetry spans, exported over OTLP/HTTP only when configured.

Set the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (for example http://127.0.0.1:4318)
to export; without it no SDK is set up and spans cost nothing, while the W3C trace
context still travels through HTTP and Kafka headers (connectors.tracing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from connectors.tracing import TRACEPARENT_HEADER, continue_or_start

_tracer = None


def setup_tracing(service: str) -> bool:
    """Install the OTLP exporter if an endpoint is configured; True when exporting."""
    global _tracer
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").rstrip("/")
    if not endpoint:
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("payments")
    return True


def exporting() -> bool:
    """Whether spans are exported; when not, a span is only its traceparent (continue_or_start)."""
    return _tracer is not None


@contextmanager
def span(name: str, parent: str | None, **attributes: str) -> Iterator[str]:
    """A span that continues `parent` (a traceparent); yields the traceparent of the new span."""
    if _tracer is None:
        yield continue_or_start(parent)
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    context = propagator.extract({TRACEPARENT_HEADER: parent}) if parent else None
    with _tracer.start_as_current_span(name, context=context, attributes=attributes):
        carrier: dict[str, str] = {}
        propagator.inject(carrier)
        yield carrier.get(TRACEPARENT_HEADER) or continue_or_start(parent)
