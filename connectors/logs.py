"""Logging: plain lines for a terminal, JSON lines when `log.json` is set."""

from __future__ import annotations

import json
import logging
import sys

from connectors.config import Config
from connectors.otel import setup_tracing
from connectors.tracing import current_traceparent, log_fields, trace_id_of


class ContextFilter(logging.Filter):
    """Puts the service and the ids of the event or request in hand on every record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        for key, value in log_fields.get().items():
            setattr(record, key, value)
        trace_id = trace_id_of(current_traceparent.get())
        if trace_id:
            record.trace_id = trace_id
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "service": getattr(record, "service", None),
            "message": record.getMessage(),
        }
        for key in ("payment_id", "wallet_id", "movement_id", "event_id", "trace_id"):
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def log_handler(config: Config, service: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(ContextFilter(service))
    if config.log.json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    return handler


def setup_logging(config: Config, service: str) -> None:
    setup_tracing(service)
    handler = log_handler(config, service)
    logging.basicConfig(level=config.log.level, handlers=[handler], force=True)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
