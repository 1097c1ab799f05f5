"""The compiled Avro reader reads exactly what fastavro reads, and refuses what is cut short."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from connectors.avro import EventDecodeError, SchemaCatalog, SingleObjectCodec
from connectors.avro.catalog import plain
from connectors.avro.fast_reader import compile_reader, read_with
from tests.unit.test_avro_codec import EVENT_TYPES, make_event

CATALOG = SchemaCatalog.default()


def body(schema: Any, datum: Any) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, schema, datum)
    return out.getvalue()


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_reads_as_fastavro_reads_it(event_type: str) -> None:
    schema = plain(CATALOG.expanded(event_type))
    reader = compile_reader(schema)
    for variant in range(4):
        data = body(schema, make_event(event_type, variant))
        assert read_with(reader, data) == schemaless_reader(io.BytesIO(data), schema, None)


# The kinds our events do not use today, and a record that refers to itself.
ODD_KINDS = parse_schema(
    {
        "type": "record",
        "name": "test.Node",
        "fields": [
            {"name": "flag", "type": "boolean"},
            {"name": "ratio", "type": "float"},
            {"name": "exact", "type": "double"},
            {"name": "blob", "type": "bytes"},
            {"name": "tag", "type": {"type": "fixed", "name": "test.Tag", "size": 4}},
            {"name": "colour", "type": {"type": "enum", "name": "test.Colour", "symbols": ["RED", "GREEN"]}},
            {"name": "counts", "type": {"type": "map", "values": "long"}},
            {"name": "names", "type": {"type": "array", "items": "string"}},
            {"name": "either", "type": ["null", "string", "long"]},
            {"name": "big", "type": "long"},
            {"name": "next", "type": ["null", "test.Node"]},
        ],
    }
)


def test_the_other_kinds_and_a_recursive_record_read_as_fastavro_reads_them() -> None:
    leaf = {
        "flag": False,
        "ratio": 0.5,
        "exact": -1.25,
        "blob": b"\x00\xff",
        "tag": b"abcd",
        "colour": "GREEN",
        "counts": {},
        "names": [],
        "either": None,
        "big": -(2**62),
        "next": None,
    }
    root = {**leaf, "flag": True, "counts": {"a": 1, "b": 300}, "names": ["x", "é"], "either": 7, "next": leaf}
    data = body(ODD_KINDS, root)
    assert read_with(compile_reader(ODD_KINDS), data) == root


def test_a_body_cut_short_anywhere_is_refused() -> None:
    schema = plain(CATALOG.expanded("PaymentSucceeded"))
    reader, data = compile_reader(schema), body(schema, make_event("PaymentSucceeded", 1))
    for end in range(len(data)):
        with pytest.raises((ValueError, IndexError)):
            read_with(reader, data[:end])
    with pytest.raises(ValueError, match="trailing"):
        read_with(reader, data + b"\x00")


def test_the_codec_reports_a_malformed_body_as_a_decode_error() -> None:
    codec = SingleObjectCodec()
    valid = codec.encode(make_event("BalanceUpdated", 0))
    with pytest.raises(EventDecodeError, match="malformed Avro body"):
        codec.decode(valid[:-5])
