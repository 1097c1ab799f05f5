"""What every domain event carries besides its payload."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventMeta:
    event_id: str
    occurred_at: int  # epoch milliseconds
    correlation_id: str
    causation_id: str | None
    # Who asked for the flow this event belongs to; events it causes keep the same actor.
    actor_subject: str | None = None
    actor_roles: tuple[str, ...] = ()
