"""Which asyncio event loop a process runs on (`processing.event_loop`).

uvloop by default: most of a worker's CPU is the event loop's own work (socket writes of many
small Kafka requests, faust's consumer thread handing records to the loop), not our handlers,
and uvloop does that work in C. `asyncio` stays available to compare with, or where uvloop
cannot be installed."""

from __future__ import annotations

import asyncio
import logging

from connectors.config import Config

log = logging.getLogger(__name__)
LOOPS = ("uvloop", "asyncio")


def use_event_loop(config: Config) -> str:
    """Loops this process creates from now on are `processing.event_loop`'s kind; returns it."""
    kind = config.processing.event_loop
    if kind not in LOOPS:
        raise ValueError(f"processing.event_loop is {kind!r}; choose one of {', '.join(LOOPS)}")
    if kind == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return kind
