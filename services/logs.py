"""Logging: plain lines for a terminal, JSON lines when `log.json` is set."""

from __future__ import annotations

import json
import logging
import sys

from connectors.config import Config


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "service": getattr(record, "service", None),
            "message": record.getMessage(),
        }
        for key in ("payment_id", "wallet_id", "event_id", "trace_id"):
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def setup_logging(config: Config, service: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if config.log.json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=config.log.level, handlers=[handler], force=True)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
