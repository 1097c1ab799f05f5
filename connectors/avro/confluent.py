"""The Confluent wire format: ``00`` + the 4-byte big-endian registry id + the body, with
record-name subjects registered in a Confluent-compatible schema registry."""

from __future__ import annotations

import json
import struct
from typing import Any, Protocol, cast

from connectors.avro.catalog import Schema, SchemaCatalog, plain, short_name
from connectors.avro.codec import EventDecodeError, EventEncodeError, event_type_of, read_body, write_body
from connectors.avro.fast_reader import Reader, compile_reader


class _Registry(Protocol):
    def register_schema(self, subject_name: str, schema: Any, normalize_schemas: bool = ...) -> int: ...

    def get_schema(self, schema_id: int, subject_name: str | None = ...) -> Any: ...


class ConfluentCodec:
    """Confluent wire format with record-name subjects.

    Record-name strategy because one topic carries several event types.
    """

    def __init__(self, registry: str | _Registry, catalog: SchemaCatalog | None = None) -> None:
        if isinstance(registry, str):
            from confluent_kafka.schema_registry import SchemaRegistryClient

            registry = cast(_Registry, SchemaRegistryClient({"url": registry}))
        self.registry = registry
        self.catalog = catalog or SchemaCatalog.default()
        self._current = {e: plain(self.catalog.expanded(e)) for e in self.catalog.event_types()}
        self._ids: dict[str, int] = {}
        self._by_id: dict[int, tuple[str, Schema]] = {}
        self._readers: dict[int, Reader] = {}

    def schema_id(self, event_type: str) -> int:
        if event_type not in self._ids:
            from confluent_kafka.schema_registry import Schema as RegistrySchema

            expanded = self.catalog.expanded(event_type)
            schema_id = self.registry.register_schema(expanded["name"], RegistrySchema(json.dumps(expanded), "AVRO"))
            self._ids[event_type] = schema_id
            self._by_id[schema_id] = (event_type, self._current[event_type])
        return self._ids[event_type]

    def encode(self, event: dict[str, Any]) -> bytes:
        event_type = event_type_of(event)
        if event_type not in self._current:
            raise EventEncodeError(f"unknown event type {event_type!r}")
        body = write_body(event_type, self._current[event_type], event)
        return b"\x00" + struct.pack(">I", self.schema_id(event_type)) + body

    def _writer(self, schema_id: int, data: bytes) -> tuple[str, Schema]:
        if schema_id not in self._by_id:
            from confluent_kafka.schema_registry.error import SchemaRegistryError

            try:
                registered = self.registry.get_schema(schema_id)
            except SchemaRegistryError as exc:
                # Only "not found" is the message's fault; outages must
                # propagate so the consumer retries instead of dead-lettering.
                if exc.http_status_code != 404:
                    raise
                raise EventDecodeError(f"unknown schema id {schema_id}", data) from exc
            try:
                raw = json.loads(registered.schema_str)
                writer = plain(raw)
            except Exception as exc:
                raise EventDecodeError(f"unusable schema id {schema_id}: {exc}", data) from exc
            self._by_id[schema_id] = (short_name(writer["name"]), writer)
        return self._by_id[schema_id]

    def decode(self, data: bytes) -> dict[str, Any]:
        data = bytes(data)
        if len(data) < 5:
            raise EventDecodeError("too short for Confluent wire format", data)
        if data[0] != 0:
            raise EventDecodeError("missing Confluent magic byte 00", data)
        (schema_id,) = struct.unpack(">I", data[1:5])
        event_type, writer = self._writer(schema_id, data)
        if schema_id not in self._readers:
            self._readers[schema_id] = compile_reader(writer)
        if event_type not in self._current:
            raise EventDecodeError(f"schema id {schema_id} is for unknown event {event_type}", data)
        reader = self._current[event_type]
        return read_body(data[5:], writer, None if writer is reader else reader, data, self._readers[schema_id])
