"""`payments health`: the system's health as one table (or JSON), from the same checks as the
gateway's GET /api/v1/system/health (services/system_health.py). Exit 1 when unhealthy."""

from __future__ import annotations

import json
from typing import TextIO

from connectors.config import Config
from services.system_health import system_health


async def health(config: Config, as_json: bool, out: TextIO) -> int:
    report = await system_health(config)
    out.write((json.dumps(report.json(), indent=2) if as_json else report.table()) + "\n")
    return 0 if report.healthy else 1
