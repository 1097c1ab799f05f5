"""Admission control: past capacity, a request that would only wait is refused at once.

A command endpoint publishes and then waits for the saga's outcome. When the saga falls behind,
every new request adds to the wait of all the others, answers take seconds and clients retry on
top: throughput collapses instead of levelling off. So the endpoint counts the requests it has
in flight and watches how long the oldest of them has waited (a rising wait is the lag of the
workers behind it, seen from here); past either bound a new request gets 503 with Retry-After,
in microseconds, and changes nothing.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from connectors.config import ApiConfig
from connectors.metrics import REQUESTS_SHED
from services.http import ApiError

RETRY_AFTER_S = 1


@dataclass
class Ticket:
    """An admitted request. Its wait counts as the system's lag until it is known to be
    waiting on someone else (an external provider's webhook), when it stops counting."""

    admission: Admission
    number: int

    def waits_on_others(self) -> None:
        self.admission.waiting.pop(self.number, None)


@dataclass
class Admission:
    max_in_flight: int
    max_behind_s: float
    in_flight: int = 0
    # ticket -> when it was admitted, oldest first (dicts keep insertion order)
    waiting: dict[int, float] = field(default_factory=dict)
    tickets: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def of(cls, config: ApiConfig) -> Admission:
        return cls(config.max_in_flight, config.max_behind_s)

    def refusal(self, now: float) -> str | None:
        if self.in_flight >= self.max_in_flight:
            return f"{self.in_flight} requests already in flight"
        oldest = next(iter(self.waiting.values()), now)
        if now - oldest > self.max_behind_s:
            return f"the oldest request in flight has waited {now - oldest:.1f}s"
        return None

    @asynccontextmanager
    async def admitted(self, endpoint: str) -> AsyncIterator[Ticket]:
        now = time.monotonic()
        why = self.refusal(now)
        if why is not None:
            REQUESTS_SHED.labels(endpoint).inc()
            raise ApiError(
                503,
                "overloaded",
                f"the system is at capacity ({why}); retry after {RETRY_AFTER_S}s",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        ticket = Ticket(self, next(self.tickets))
        self.waiting[ticket.number] = now
        self.in_flight += 1
        try:
            yield ticket
        finally:
            self.in_flight -= 1
            ticket.waits_on_others()


ADMISSION = web.AppKey("admission", Admission)
TICKET = "admission_ticket"  # request key: the create handler's Ticket
