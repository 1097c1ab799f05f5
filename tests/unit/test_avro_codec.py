from __future__ import annotations

import io
import json
import random
import shutil
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from faust.serializers import codecs as faust_codecs

from connectors.avro import (
    SCHEMAS_DIR,
    Codec,
    ConfluentCodec,
    EventDecodeError,
    EventEncodeError,
    SchemaCatalog,
    SingleObjectCodec,
    install_faust_codec,
    make_codec,
    rabin_fingerprint,
)
from tests.support.avro_samples import sample_datum

CATALOG = SchemaCatalog.default()
EVENT_TYPES = CATALOG.event_types()


def make_event(event_type: str, variant: int = 0, schema: Any = None) -> dict[str, Any]:
    event: dict[str, Any] = sample_datum(schema or CATALOG.schema(event_type), variant)
    event["envelope"] = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": 1_700_000_123_456,
        "correlation_id": str(uuid.uuid4()),
        "causation_id": None if variant % 2 == 0 else str(uuid.uuid4()),
        "actor_subject": None if variant % 2 == 0 else str(uuid.uuid4()),
        "actor_roles": [] if variant % 2 == 0 else ["user"],
    }
    return event


def test_catalog_holds_every_event() -> None:
    assert set(EVENT_TYPES) == {
        "PaymentCreated", "PaymentOperationCompleted", "PaymentOperationInconsistent", "PaymentOperationPending",
        "PaymentSucceeded", "PaymentFailed", "RefundRequested", "PaymentRefunded", "RefundFailed",
        "MovementRequired", "WalletOpenRequested", "MovementUpdated", "WalletOpened",
        "BalanceUpdated", "ProviderUpdate", "DeadLetter",
    }  # fmt: skip


def test_rabin_matches_known_vector_and_fastavro() -> None:
    # Vector from the Avro Java / fastavro test suites (little-endian hex).
    assert rabin_fingerprint(b'"int"').hex() == "8f5c393f1ad57572"
    for event_type in EVENT_TYPES:
        canonical = CATALOG.canonical(event_type)
        # fastavro returns the little-endian bytes as a hex string.
        expected = bytes.fromhex(fastavro_fingerprint(canonical, "CRC-64-AVRO"))
        assert CATALOG.fingerprint(event_type) == expected
        assert CATALOG.by_fingerprint(expected) == event_type


class FakeRegistry:
    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, int] = {}

    def register_schema(self, subject_name: str, schema: Any, normalize_schemas: bool = False) -> int:
        if subject_name not in self.subjects:
            self.subjects[subject_name] = len(self.schemas) + 1
            self.schemas[self.subjects[subject_name]] = schema.schema_str
        return self.subjects[subject_name]

    def get_schema(self, schema_id: int, subject_name: str | None = None) -> Any:
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        if schema_id not in self.schemas:
            raise SchemaRegistryError(404, 40403, "Schema not found")
        return Schema(self.schemas[schema_id], "AVRO")


def _valid(codec: Codec) -> bytes:
    return codec.encode(make_event("PaymentCreated", 1))


Garbage = dict[str, Callable[[Codec], bytes]]
# Bytes that no codec may take for an event, whatever its framing.
GARBAGE: Garbage = {
    "empty": lambda c: b"",
    "one_zero_byte": lambda c: b"\x00",
    "random": lambda c: b"\x17" + random.Random(0).randbytes(63),
    "truncated_body": lambda c: _valid(c)[:-3],
    "trailing_bytes": lambda c: _valid(c) + b"\x00",
}


class CodecContract:
    """What every wire format promises; one subclass per codec, as eventsourcing runs one
    suite against every adapter. A subclass builds the producing and the consuming codec
    (separate instances, so nothing cached by one side helps the other), says what its
    framing looks like and which malformed frames it must refuse."""

    FRAMING_GARBAGE: ClassVar[Garbage] = {}

    @pytest.fixture
    def codecs(self) -> tuple[Codec, Codec]:
        raise NotImplementedError

    def check_framing(self, data: bytes, event_type: str, producer: Codec) -> None:
        raise NotImplementedError

    @pytest.mark.parametrize("variant", [0, 1, 2])
    @pytest.mark.parametrize("event_type", EVENT_TYPES)
    def test_round_trip_every_event(self, codecs: tuple[Codec, Codec], event_type: str, variant: int) -> None:
        producer, consumer = codecs
        event = make_event(event_type, variant)
        data = producer.encode(event)
        self.check_framing(data, event_type, producer)
        decoded = consumer.decode(data)
        assert decoded == event
        assert type(decoded["envelope"]["occurred_at"]) is int

    def test_timestamps_stay_int_millis(self, codecs: tuple[Codec, Codec]) -> None:
        producer, consumer = codecs
        event = make_event("ProviderUpdate", 1)
        event["provider_timestamp"] = 1_234_567_890_123
        assert consumer.decode(producer.encode(event))["provider_timestamp"] == 1_234_567_890_123

    def test_decode_garbage_raises(self, codecs: tuple[Codec, Codec]) -> None:
        producer, consumer = codecs
        for case, make in {**GARBAGE, **self.FRAMING_GARBAGE}.items():
            data = make(producer)
            with pytest.raises(EventDecodeError) as info:
                consumer.decode(data)
            assert data[:4].hex() in str(info.value), case

    def test_encode_unknown_event_type(self, codecs: tuple[Codec, Codec]) -> None:
        producer, _ = codecs
        event = make_event("PaymentCreated")
        event["envelope"]["event_type"] = "PaymentTeleported"
        with pytest.raises(EventEncodeError, match="PaymentTeleported"):
            producer.encode(event)
        with pytest.raises(EventEncodeError):
            producer.encode({"payment_id": "p"})

    def test_encode_float_amount_rejected(self, codecs: tuple[Codec, Codec]) -> None:
        event = make_event("PaymentCreated")
        event["amount"]["amount"] = 12.5
        with pytest.raises(EventEncodeError, match=r"PaymentCreated.*amount"):
            codecs[0].encode(event)

    def test_encode_missing_required_field_rejected(self, codecs: tuple[Codec, Codec]) -> None:
        event = make_event("PaymentSucceeded")
        del event["user_id"]
        with pytest.raises(EventEncodeError, match="user_id"):
            codecs[0].encode(event)


class TestSingleObjectCodec(CodecContract):
    FRAMING_GARBAGE: ClassVar[Garbage] = {
        "bad_marker": lambda c: b"\xc3\x02" + _valid(c)[2:],
        "unknown_fingerprint": lambda c: b"\xc3\x01" + b"\xab" * 8 + _valid(c)[10:],
        "header_only": lambda c: _valid(c)[:10],
    }

    @pytest.fixture
    def codecs(self) -> tuple[Codec, Codec]:
        return SingleObjectCodec(CATALOG), SingleObjectCodec(CATALOG)

    def check_framing(self, data: bytes, event_type: str, producer: Codec) -> None:
        assert data[:2] == b"\xc3\x01"
        assert data[2:10] == CATALOG.fingerprint(event_type)


class TestConfluentCodec(CodecContract):
    FRAMING_GARBAGE: ClassVar[Garbage] = {
        "bad_magic_byte": lambda c: b"\x01" + _valid(c)[1:],
        "unknown_schema_id": lambda c: b"\x00\x00\x00\x00\x63" + _valid(c)[5:],
        "header_only": lambda c: _valid(c)[:5],
    }

    @pytest.fixture
    def codecs(self) -> tuple[Codec, Codec]:
        # The consumer has no cached ids, so decoding exercises the registry lookup.
        registry = FakeRegistry()
        return ConfluentCodec(registry, CATALOG), ConfluentCodec(registry, CATALOG)

    def check_framing(self, data: bytes, event_type: str, producer: Codec) -> None:
        assert isinstance(producer, ConfluentCodec)
        assert data[0] == 0
        assert struct.unpack(">I", data[1:5])[0] == producer.schema_id(event_type)

    def test_subjects_are_record_names(self) -> None:
        registry = FakeRegistry()
        data = ConfluentCodec(registry, CATALOG).encode(make_event("MovementUpdated", 1))
        assert registry.subjects == {"payments.events.MovementUpdated": struct.unpack(">I", data[1:5])[0]}


def test_old_version_decodes_with_current_schema(tmp_path: Path) -> None:
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, root)
    released = root / "released" / "payment_created.v1.avsc"
    old_raw = json.loads(released.read_text())
    old_raw["fields"] = [f for f in old_raw["fields"] if f["name"] != "description"]
    released.write_text(json.dumps(old_raw))
    catalog = SchemaCatalog(root)
    old = parse_schema(old_raw)
    old_fp = rabin_fingerprint(to_parsing_canonical_form(old).encode())
    assert old_fp != catalog.fingerprint("PaymentCreated")

    event = make_event("PaymentCreated", 1, schema=old)
    body = io.BytesIO()
    schemaless_writer(body, old, event)
    decoded = SingleObjectCodec(catalog).decode(b"\xc3\x01" + old_fp + body.getvalue())
    # v1 data has no actor: the current schema's defaults fill it in.
    envelope = {**event["envelope"], "actor_subject": None, "actor_roles": []}
    assert decoded == {**event, "description": None, "envelope": envelope}


def test_faust_codec_round_trip() -> None:
    event = make_event("WalletOpened", 1)
    install_faust_codec(SingleObjectCodec(CATALOG))
    data = faust_codecs.dumps("avro", event)
    assert data[:2] == b"\xc3\x01"
    assert faust_codecs.loads("avro", data) == event

    class Marker:
        def encode(self, event: dict[str, Any]) -> bytes:
            return b"marker"

        def decode(self, data: bytes) -> dict[str, Any]:
            return {"marker": data}

    install_faust_codec(Marker())
    try:
        assert faust_codecs.dumps("avro", event) == b"marker"
    finally:
        install_faust_codec(SingleObjectCodec(CATALOG))
    assert faust_codecs.loads("avro", data) == event


def test_make_codec_picks_format() -> None:
    assert isinstance(make_codec(None, CATALOG), SingleObjectCodec)
    assert isinstance(make_codec("", CATALOG), SingleObjectCodec)
    assert isinstance(make_codec("http://localhost:8081", CATALOG), ConfluentCodec)
