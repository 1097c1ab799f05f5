"""Admission control: past capacity, a request that would only wait is refused at once.

A command endpoint publishes and then waits for the saga's outcome. When the saga falls behind,
every new request adds to the wait of all the others, answers take seconds and clients retry on
top: throughput collapses instead of levelling off. So the endpoint refuses a new request with
503 and Retry-After, in microseconds and changing nothing, when
- `max_in_flight` requests are already in flight, or
- the oldest request waiting on the saga has waited longer than `max_behind_s`, or
- the saga is behind (the oldest has waited a quarter of that) and the requests already waiting
  are more than it completes in `max_behind_s` (Little's law: the queue ahead of a new request
  would take longer than that to drain). The age alone reacts late: by the time the oldest
  has waited `max_behind_s`, the queue behind it holds that long of arrivals at the overload
  rate, and each of them waits longer still (measured: p99 4.9 s at twice capacity).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

from connectors.config import ApiConfig
from connectors.metrics import REQUESTS_SHED
from services.http import ApiError

RETRY_AFTER_S = 1
RATE_WINDOW_S = 1.0  # completions counted over the last second give the saga's rate
# After a quiet second the rate reads 0: a few slow requests must not shut the door.
MIN_QUEUE = 32


@dataclass
class Ticket:
    """An admitted request. Its wait counts as the system's lag until it is known to be
    waiting on someone else (an external provider's webhook), when it stops counting."""

    admission: Admission
    number: int

    def waits_on_others(self) -> None:
        self.admission.waiting.pop(self.number, None)

    def done(self) -> None:
        if self.admission.waiting.pop(self.number, None) is not None:
            self.admission.finished.append(time.monotonic())


@dataclass
class Admission:
    max_in_flight: int
    max_behind_s: float
    in_flight: int = 0
    # ticket -> when it was admitted, oldest first (dicts keep insertion order)
    waiting: dict[int, float] = field(default_factory=dict)
    tickets: itertools.count[int] = field(default_factory=itertools.count)
    finished: deque[float] = field(default_factory=deque)  # when waits on the saga ended, last second

    @classmethod
    def of(cls, config: ApiConfig) -> Admission:
        return cls(config.max_in_flight, config.max_behind_s)

    def refusal(self, now: float) -> str | None:
        if self.in_flight >= self.max_in_flight:
            return f"{self.in_flight} requests already in flight"
        behind = now - next(iter(self.waiting.values()), now)
        if behind > self.max_behind_s:
            return f"the oldest request in flight has waited {behind:.1f}s"
        while self.finished and self.finished[0] < now - RATE_WINDOW_S:
            self.finished.popleft()
        drained = max(MIN_QUEUE, len(self.finished) / RATE_WINDOW_S * self.max_behind_s)
        if behind > self.max_behind_s / 4 and len(self.waiting) > drained:
            return f"{len(self.waiting)} requests wait, {drained:.0f} complete in {self.max_behind_s:g}s"
        return None

    def admitted(self, endpoint: str) -> Admitted:
        """`async with admission.admitted(endpoint) as ticket:` the request runs admitted, or 503."""
        return Admitted(self, endpoint)


class Admitted:
    """The admission of one request, as a plain async context manager (a generator-based one
    cost each request a generator and its frames)."""

    def __init__(self, admission: Admission, endpoint: str) -> None:
        self.admission, self.endpoint = admission, endpoint
        self.ticket: Ticket | None = None

    async def __aenter__(self) -> Ticket:
        admission = self.admission
        now = time.monotonic()
        why = admission.refusal(now)
        if why is not None:
            REQUESTS_SHED.labels(self.endpoint).inc()
            raise ApiError(
                503,
                "overloaded",
                f"the system is at capacity ({why}); retry after {RETRY_AFTER_S}s",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.ticket = ticket = Ticket(admission, next(admission.tickets))
        admission.waiting[ticket.number] = now
        admission.in_flight += 1
        return ticket

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        assert self.ticket is not None
        if exc_type is not None:
            # A refused or failed request says nothing of the saga's rate: a flood of bad
            # bodies must not make room for more waiting.
            self.ticket.waits_on_others()
        else:
            self.ticket.done()
        self.admission.in_flight -= 1


ADMISSION = web.AppKey("admission", Admission)
TICKET = "admission_ticket"  # request key: the create handler's Ticket
