"""What every domain event carries besides its payload."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventMeta:
    event_id: str
    occurred_at: int  # epoch milliseconds
    correlation_id: str
    causation_id: str | None
