"""Domain events to Avro records and back: the envelope every event shares."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any, TypeVar

from domain.access import Principal
from domain.events import EventMeta
from domain.money import Money

SCHEMA_VERSION = 1

T = TypeVar("T")


def now_ms() -> int:
    return int(time.time() * 1000)


def envelope(event_type: str, meta: EventMeta) -> dict[str, Any]:
    return {
        "event_id": meta.event_id,
        "event_type": event_type,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": meta.occurred_at,
        "correlation_id": meta.correlation_id,
        "causation_id": meta.causation_id,
        "actor_subject": meta.actor_subject,
        "actor_roles": list(meta.actor_roles),
    }


def new_meta(
    correlation_id: str | None = None,
    causation_id: str | None = None,
    event_id: str | None = None,
    actor: Principal | None = None,
) -> EventMeta:
    event_id = event_id or str(uuid.uuid4())
    return EventMeta(event_id, now_ms(), correlation_id or event_id, causation_id, *actor_fields(actor))


def actor_fields(actor: Principal | None) -> tuple[str | None, tuple[str, ...]]:
    return (None, ()) if actor is None else (actor.subject, tuple(sorted(actor.roles)))


def actor_of(envelope: dict[str, Any]) -> Principal | None:
    """The principal that asked, from an envelope; None for events written before actors existed."""
    subject = envelope.get("actor_subject")
    return None if subject is None else Principal(subject, frozenset(envelope.get("actor_roles") or ()))


def meta_of(envelope: dict[str, Any]) -> EventMeta:
    return EventMeta(
        envelope["event_id"],
        envelope["occurred_at"],
        envelope["correlation_id"],
        envelope["causation_id"],
        envelope.get("actor_subject"),
        tuple(envelope.get("actor_roles") or ()),
    )


def wire_name(event: Any) -> str:
    """The Avro record name of a domain event: its class name, unless the class keeps an older
    wire name (`WIRE_NAME`) that the log already holds."""
    return str(getattr(type(event), "WIRE_NAME", type(event).__name__))


def to_record(event: Any) -> dict[str, Any]:
    """A domain event dataclass (with a `meta` field) as the Avro record of its wire name."""
    record: dict[str, Any] = {"envelope": envelope(wire_name(event), event.meta)}
    for field in dataclasses.fields(event):
        if field.name != "meta":
            record[field.name] = _plain(getattr(event, field.name))
    return record


def command_record(event_type: str, meta: EventMeta, **payload: Any) -> dict[str, Any]:
    return {"envelope": envelope(event_type, meta), **{k: _plain(v) for k, v in payload.items()}}


def money(record: dict[str, Any]) -> Money:
    return Money(record["amount"], record["currency"])


def _plain(value: Any) -> Any:
    if isinstance(value, Money):
        return {"amount": value.amount, "currency": value.currency}
    return value


def from_record(cls: type[T], record: dict[str, Any]) -> T:
    """The domain event dataclass `cls` from its Avro record (the inverse of to_record)."""
    meta = meta_of(record["envelope"])
    values = {}
    factory: Any = cls
    for field in dataclasses.fields(factory):
        if field.name != "meta":
            value = record[field.name]
            is_money = isinstance(value, dict) and set(value) == {"amount", "currency"}
            values[field.name] = money(value) if is_money else value
    result: T = factory(meta, **values)
    return result
