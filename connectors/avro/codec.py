"""The codec contract every wire format keeps: encode an event dict to bytes and back, an
encode error naming the field for a producer bug, a decode error (dead-lettered) for bytes
that are not an event."""

from __future__ import annotations

import io
from typing import Any, Protocol, cast

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from connectors.avro.catalog import Schema
from connectors.avro.fast_reader import Reader, read_with


class EventDecodeError(ValueError):
    """Bytes that cannot be turned into an event; route them to the DLQ."""

    def __init__(self, reason: str, data: bytes) -> None:
        preview = data[:16].hex() + ("..." if len(data) > 16 else "")
        super().__init__(f"{reason} ({len(data)} bytes: {preview or '<empty>'})")
        self.reason = reason
        self.data = data


class EventEncodeError(ValueError):
    """An event dict that does not match its schema (a producer bug)."""


class Codec(Protocol):
    def encode(self, event: dict[str, Any]) -> bytes: ...

    def decode(self, data: bytes) -> dict[str, Any]: ...


def event_type_of(event: Any) -> str:
    try:
        return cast(str, event["envelope"]["event_type"])
    except (KeyError, TypeError):
        raise EventEncodeError("event has no envelope.event_type") from None


def write_body(event_type: str, schema: Schema, event: dict[str, Any]) -> bytes:
    # schemaless_writer silently coerces or crashes on some mismatches;
    # validate first to get an error that names the field. The boolean check first: with
    # raise_errors, every union branch that does not match builds an exception, and that
    # was 6 % of a payment worker's CPU.
    try:
        if not validate(event, schema, raise_errors=False):
            validate(event, schema, raise_errors=True)
        out = io.BytesIO()
        schemaless_writer(out, schema, event)
    except ValidationError as exc:
        detail = "; ".join(str(error) for error in exc.errors)
        raise EventEncodeError(f"{event_type}: {detail}") from exc
    except Exception as exc:
        raise EventEncodeError(f"{event_type}: {exc}") from exc
    return out.getvalue()


def read_body(
    body: bytes, writer: Schema, reader: Schema | None, data: bytes, compiled: Reader | None = None
) -> dict[str, Any]:
    """The event of an Avro body; `compiled` reads the writer's own schema much faster than
    fastavro (connectors.avro.fast_reader), which remains the reader across schema versions."""
    if reader is None and compiled is not None:
        try:
            return read_with(compiled, body)
        except Exception as exc:
            raise EventDecodeError(f"malformed Avro body: {type(exc).__name__}: {exc}", data) from exc
    stream = io.BytesIO(body)
    try:
        value = schemaless_reader(stream, writer, reader)
    except Exception as exc:
        raise EventDecodeError(f"malformed Avro body: {type(exc).__name__}: {exc}", data) from exc
    if stream.tell() != len(body):
        raise EventDecodeError(f"{len(body) - stream.tell()} trailing bytes after Avro body", data)
    if not isinstance(value, dict):
        raise EventDecodeError("Avro body is not a record", data)
    return value
