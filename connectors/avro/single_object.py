"""Avro single-object encoding, no registry needed: ``C3 01`` + the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema + the body."""

from __future__ import annotations

from typing import Any

from connectors.avro.catalog import SchemaCatalog, plain
from connectors.avro.codec import EventDecodeError, EventEncodeError, event_type_of, read_body, write_body
from connectors.avro.fast_reader import compile_reader

SINGLE_OBJECT_MARKER = b"\xc3\x01"


class SingleObjectCodec:
    """Avro single-object encoding; old writers decode via released schemas."""

    def __init__(self, catalog: SchemaCatalog | None = None) -> None:
        self.catalog = catalog or SchemaCatalog.default()
        self._current = {e: plain(self.catalog.expanded(e)) for e in self.catalog.event_types()}
        self._writers = {fp: (e, plain(raw)) for fp, (e, raw) in self.catalog.writers().items()}
        self._fps = {e: self.catalog.fingerprint(e) for e in self.catalog.event_types()}
        self._readers = {fp: compile_reader(schema) for fp, (_, schema) in self._writers.items()}

    def encode(self, event: dict[str, Any]) -> bytes:
        event_type = event_type_of(event)
        if event_type not in self._current:
            raise EventEncodeError(f"unknown event type {event_type!r}")
        body = write_body(event_type, self._current[event_type], event)
        return SINGLE_OBJECT_MARKER + self._fps[event_type] + body

    def decode(self, data: bytes) -> dict[str, Any]:
        data = bytes(data)
        if len(data) < 10:
            raise EventDecodeError("too short for Avro single-object encoding", data)
        if data[:2] != SINGLE_OBJECT_MARKER:
            raise EventDecodeError("missing Avro single-object marker C3 01", data)
        fp = data[2:10]
        if fp not in self._writers:
            raise EventDecodeError(f"unknown schema fingerprint {fp.hex()}", data)
        event_type, writer = self._writers[fp]
        if event_type not in self._current:
            raise EventDecodeError(f"event type {event_type} no longer exists", data)
        reader = None if fp == self._fps[event_type] else self._current[event_type]
        return read_body(data[10:], writer, reader, data, self._readers[fp])
