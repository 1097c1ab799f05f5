"""Logging: plain lines for a terminal, JSON lines when `log.json` is set. Both carry the
ids of the request or event in hand: request id, caller, trace id, and the aggregate ids."""

from __future__ import annotations

import json
import logging
import sys
import time

from connectors.config import Config
from connectors.otel import setup_tracing
from connectors.tracing import current_caller, current_request_id, current_traceparent, log_fields, trace_id_of

# The context a line may carry, in the order a plain line shows it.
CONTEXT_KEYS = ("request_id", "caller", "payment_id", "wallet_id", "movement_id", "event_id", "trace_id")
# What an access line adds (services.request_ids.log_access); a plain line has them in its message.
ACCESS_KEYS = ("method", "route", "status", "latency_ms")
LINE_KEYS = (*CONTEXT_KEYS, *ACCESS_KEYS)


class ContextFilter(logging.Filter):
    """Puts the service and the ids of the event or request in hand on every record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        for key, value in log_fields.get().items():
            setattr(record, key, value)
        # The request's own ids win over an event's: a request is what an operator holds.
        request_id, caller = current_request_id.get(), current_caller.get()
        if request_id:
            record.request_id = request_id
        if caller:
            record.caller = caller
        trace_id = trace_id_of(current_traceparent.get())
        if trace_id:
            record.trace_id = trace_id
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # An API writes a line per request: strftime once a second, not once a line.
        self._second, self._stamp = -1, ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
        return f"{self._stamp},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        attributes = record.__dict__
        line = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "service": attributes.get("service"),
            "message": record.getMessage(),
        }
        for key in LINE_KEYS:
            if key in attributes:
                line[key] = attributes[key]
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


class PlainFormatter(logging.Formatter):
    """One line for a person: the message, then its context as key=value."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s%(context)s")

    def format(self, record: logging.LogRecord) -> str:
        attributes = record.__dict__  # a handler without the filter has none of these: no context
        record.context = "".join(f" {key}={attributes[key]}" for key in CONTEXT_KEYS if key in attributes)
        return super().format(record)


def log_handler(config: Config, service: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(ContextFilter(service))
    handler.setFormatter(JsonFormatter() if config.log.json else PlainFormatter(service))
    return handler


def setup_logging(config: Config, service: str) -> None:
    setup_tracing(service)
    handler = log_handler(config, service)
    logging.basicConfig(level=config.log.level, handlers=[handler], force=True)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
