"""Avro event catalog (schemas/) and the wire codecs used on every topic.

Two wire formats share one interface (:class:`Codec`):

* Avro single-object encoding (no registry needed): ``C3 01`` + 8-byte
  little-endian CRC-64-AVRO fingerprint of the writer schema + body.
* Confluent wire format: ``00`` + 4-byte big-endian registry id + body.

Timestamps stay plain ``int`` epoch millis in event dicts, both ways.
"""

from __future__ import annotations

import copy
import io
import json
import re
import struct
import sys
from pathlib import Path
from typing import Any, Protocol, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import UnknownType, to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

__all__ = [
    "Codec",
    "ConfluentCodec",
    "EventDecodeError",
    "EventEncodeError",
    "SchemaCatalog",
    "SingleObjectCodec",
    "compatibility_problems",
    "freeze_released",
    "install_faust_codec",
    "make_codec",
    "rabin_fingerprint",
    "sample_datum",
]

Schema = dict[str, Any]

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
SINGLE_OBJECT_MARKER = b"\xc3\x01"
_RELEASED_NAME = re.compile(r"^(?P<stem>[a-z0-9_]+)\.v(?P<version>[0-9]+)\.avsc$")


class EventDecodeError(ValueError):
    """Bytes that cannot be turned into an event; route them to the DLQ."""

    def __init__(self, reason: str, data: bytes) -> None:
        preview = data[:16].hex() + ("..." if len(data) > 16 else "")
        super().__init__(f"{reason} ({len(data)} bytes: {preview or '<empty>'})")
        self.reason = reason
        self.data = data


class EventEncodeError(ValueError):
    """An event dict that does not match its schema (a producer bug)."""


# --- CRC-64-AVRO (Rabin) fingerprint, per the Avro spec ---------------------

_EMPTY64 = 0xC15D213AA4D7A795


def _rabin_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


_RABIN_TABLE = _rabin_table()


def rabin_fingerprint(data: bytes) -> bytes:
    """8-byte CRC-64-AVRO, little-endian as single-object encoding requires."""
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _RABIN_TABLE[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


# --- schema helpers ----------------------------------------------------------


def _short_name(fullname: str) -> str:
    return fullname.rsplit(".", 1)[-1]


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _parse(raw: Any, named: dict[str, Any] | None = None) -> Schema:
    return cast(Schema, parse_schema(raw, named_schemas=named))


_KEY_ORDER = (
    "name",
    "type",
    "topic",
    "doc",
    "symbols",
    "size",
    "items",
    "values",
    "default",
)


def _key_rank(key: str) -> int:
    # Frozen files are read by humans in reviews; keep "fields" last.
    return _KEY_ORDER.index(key) if key in _KEY_ORDER else len(_KEY_ORDER)


def _expand(parsed: Schema) -> Schema:
    """Self-contained JSON: each named type inlined at its FIRST use only.

    fastavro's expand_schema inlines every use, which redefines names and
    yields a canonical form other Avro implementations reject.
    """
    named: dict[str, Any] = parsed.get("__named_schemas", {})
    seen: set[str] = set()

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            if node in named and node not in seen:
                return walk(named[node])
            return node
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        if node.get("type") in ("record", "enum", "fixed") and "name" in node:
            seen.add(node["name"])
        out: dict[str, Any] = {}
        for key in sorted(node, key=_key_rank):
            if key.startswith("__"):
                continue
            if key == "fields":
                out[key] = [walk(field) for field in node[key]]
            elif key in ("type", "items", "values"):
                out[key] = walk(node[key])
            else:
                out[key] = copy.deepcopy(node[key])
        return out

    return cast(Schema, walk(parsed))


def _strip_logical(raw: Any) -> Any:
    # Decoding with logical types would hand back datetimes; events carry
    # epoch-millis ints, and the canonical form (hence fingerprint) ignores
    # logicalType anyway.
    if isinstance(raw, list):
        return [_strip_logical(x) for x in raw]
    if isinstance(raw, dict):
        return {k: _strip_logical(v) for k, v in raw.items() if k != "logicalType"}
    return raw


def _plain(expanded: Schema) -> Schema:
    return _parse(_strip_logical(expanded))


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


# --- catalog -------------------------------------------------------------------


class SchemaCatalog:
    """Event schemas by event type (= record name), plus released versions."""

    _default: SchemaCatalog | None = None

    def __init__(self, root: Path | str = SCHEMAS_DIR) -> None:
        self.root = Path(root)
        named = self._load_types(sorted((self.root / "types").glob("*.avsc")))
        self._schemas: dict[str, Schema] = {}
        self._expanded: dict[str, Schema] = {}
        self._topics: dict[str, str] = {}
        for path in sorted(self.root.glob("*.avsc")):
            try:
                parsed = _parse(_load_json(path), dict(named))
            except Exception as exc:
                raise ValueError(f"{path}: {exc}") from exc
            event_type = _short_name(parsed["name"])
            if event_type in self._schemas:
                raise ValueError(f"{path}: event type {event_type} defined twice")
            topic = str(parsed.get("topic") or "")
            if not topic:
                raise ValueError(f"{path}: missing top-level 'topic' attribute")
            expanded = _expand(parsed)
            self._expanded[event_type] = expanded
            self._schemas[event_type] = _parse(expanded)
            self._topics[event_type] = topic
        self._released: dict[str, dict[int, Schema]] = {}
        for path in sorted((self.root / "released").glob("*.avsc")):
            match = _RELEASED_NAME.match(path.name)
            if match is None:
                raise ValueError(f"{path}: released files are named <event>.v<N>.avsc")
            raw = _load_json(path)
            _parse(raw)  # fail fast on a corrupt frozen file
            versions = self._released.setdefault(_short_name(raw["name"]), {})
            versions[int(match["version"])] = raw
        self._writers: dict[bytes, tuple[str, Schema]] = {}
        for event_type, versions in self._released.items():
            for raw in versions.values():
                self._writers[self._fp_of(raw)] = (event_type, raw)
        for event_type, raw in self._expanded.items():
            self._writers[self.fingerprint(event_type)] = (event_type, raw)

    @classmethod
    def default(cls) -> SchemaCatalog:
        if cls._default is None:
            cls._default = cls(SCHEMAS_DIR)
        return cls._default

    @staticmethod
    def _load_types(paths: list[Path]) -> dict[str, Any]:
        # Type files may reference each other; retry until a pass makes no
        # progress so file order does not matter.
        named: dict[str, Any] = {}
        pending = {p: _load_json(p) for p in paths}
        while pending:
            failed: dict[Path, str] = {}
            for path, raw in pending.items():
                # fastavro registers names before a parse fails halfway; a
                # throwaway copy keeps the retry from seeing half a type.
                trial = dict(named)
                try:
                    _parse(raw, trial)
                except UnknownType as exc:
                    failed[path] = str(exc)
                    continue
                except Exception as exc:
                    raise ValueError(f"{path}: {exc}") from exc
                named = trial
            if len(failed) == len(pending):
                raise ValueError(f"unresolvable named types: {failed}")
            pending = {p: pending[p] for p in failed}
        return named

    @staticmethod
    def _fp_of(raw: Schema) -> bytes:
        return rabin_fingerprint(to_parsing_canonical_form(_parse(raw)).encode())

    def _require(self, event_type: str) -> None:
        if event_type not in self._schemas:
            raise KeyError(f"unknown event type {event_type!r}")

    def schema(self, event_type: str) -> Schema:
        self._require(event_type)
        return self._schemas[event_type]

    def expanded(self, event_type: str) -> Schema:
        """Plain JSON of the current schema with named types inlined."""
        self._require(event_type)
        return copy.deepcopy(self._expanded[event_type])

    def topic_of(self, event_type: str) -> str:
        self._require(event_type)
        return self._topics[event_type]

    def event_types(self) -> list[str]:
        return sorted(self._schemas)

    def event_types_on(self, topic: str) -> list[str]:
        return sorted(e for e, t in self._topics.items() if t == topic)

    def topics(self) -> list[str]:
        return sorted(set(self._topics.values()))

    def canonical(self, event_type: str) -> str:
        return to_parsing_canonical_form(self.schema(event_type))

    def fingerprint(self, event_type: str) -> bytes:
        return rabin_fingerprint(self.canonical(event_type).encode())

    def by_fingerprint(self, fp: bytes) -> str:
        """Event type of a current OR released schema fingerprint."""
        try:
            return self._writers[bytes(fp)][0]
        except KeyError:
            raise KeyError(f"unknown schema fingerprint {bytes(fp).hex()}") from None

    def writers(self) -> dict[bytes, tuple[str, Schema]]:
        """fingerprint -> (event type, expanded JSON), current and released."""
        return dict(self._writers)

    def released(self) -> dict[str, dict[int, Schema]]:
        """event type -> {version: expanded JSON} from schemas/released/."""
        return {e: dict(v) for e, v in self._released.items()}


# --- codecs ------------------------------------------------------------------


class Codec(Protocol):
    def encode(self, event: dict[str, Any]) -> bytes: ...

    def decode(self, data: bytes) -> dict[str, Any]: ...


def _event_type_of(event: Any) -> str:
    try:
        return cast(str, event["envelope"]["event_type"])
    except (KeyError, TypeError):
        raise EventEncodeError("event has no envelope.event_type") from None


def _write_body(event_type: str, schema: Schema, event: dict[str, Any]) -> bytes:
    # schemaless_writer silently coerces or crashes on some mismatches;
    # validate first to get an error that names the field.
    try:
        validate(event, schema, raise_errors=True)
        out = io.BytesIO()
        schemaless_writer(out, schema, event)
    except ValidationError as exc:
        detail = "; ".join(str(error) for error in exc.errors)
        raise EventEncodeError(f"{event_type}: {detail}") from exc
    except Exception as exc:
        raise EventEncodeError(f"{event_type}: {exc}") from exc
    return out.getvalue()


def _read_body(body: bytes, writer: Schema, reader: Schema | None, data: bytes) -> dict[str, Any]:
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


class SingleObjectCodec:
    """Avro single-object encoding; old writers decode via released schemas."""

    def __init__(self, catalog: SchemaCatalog | None = None) -> None:
        self.catalog = catalog or SchemaCatalog.default()
        self._current = {e: _plain(self.catalog.expanded(e)) for e in self.catalog.event_types()}
        self._writers = {fp: (e, _plain(raw)) for fp, (e, raw) in self.catalog.writers().items()}
        self._fps = {e: self.catalog.fingerprint(e) for e in self.catalog.event_types()}

    def encode(self, event: dict[str, Any]) -> bytes:
        event_type = _event_type_of(event)
        if event_type not in self._current:
            raise EventEncodeError(f"unknown event type {event_type!r}")
        body = _write_body(event_type, self._current[event_type], event)
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
        return _read_body(data[10:], writer, reader, data)


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
        self._current = {e: _plain(self.catalog.expanded(e)) for e in self.catalog.event_types()}
        self._ids: dict[str, int] = {}
        self._by_id: dict[int, tuple[str, Schema]] = {}

    def schema_id(self, event_type: str) -> int:
        if event_type not in self._ids:
            from confluent_kafka.schema_registry import Schema as RegistrySchema

            expanded = self.catalog.expanded(event_type)
            schema_id = self.registry.register_schema(expanded["name"], RegistrySchema(json.dumps(expanded), "AVRO"))
            self._ids[event_type] = schema_id
            self._by_id[schema_id] = (event_type, self._current[event_type])
        return self._ids[event_type]

    def encode(self, event: dict[str, Any]) -> bytes:
        event_type = _event_type_of(event)
        if event_type not in self._current:
            raise EventEncodeError(f"unknown event type {event_type!r}")
        body = _write_body(event_type, self._current[event_type], event)
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
                writer = _plain(raw)
            except Exception as exc:
                raise EventDecodeError(f"unusable schema id {schema_id}: {exc}", data) from exc
            self._by_id[schema_id] = (_short_name(writer["name"]), writer)
        return self._by_id[schema_id]

    def decode(self, data: bytes) -> dict[str, Any]:
        data = bytes(data)
        if len(data) < 5:
            raise EventDecodeError("too short for Confluent wire format", data)
        if data[0] != 0:
            raise EventDecodeError("missing Confluent magic byte 00", data)
        (schema_id,) = struct.unpack(">I", data[1:5])
        event_type, writer = self._writer(schema_id, data)
        if event_type not in self._current:
            raise EventDecodeError(f"schema id {schema_id} is for unknown event {event_type}", data)
        reader = self._current[event_type]
        return _read_body(data[5:], writer, None if writer is reader else reader, data)


def make_codec(registry_url: str | None, catalog: SchemaCatalog | None = None) -> Codec:
    if registry_url:
        return ConfluentCodec(registry_url, catalog)
    return SingleObjectCodec(catalog)


def install_faust_codec(codec: Codec, name: str = "avro") -> Any:
    """Register ``codec`` with faust under ``name``; re-installing replaces it."""
    from faust.serializers import codecs

    class _FaustAvroCodec(codecs.Codec):
        def _dumps(self, obj: Any) -> bytes:
            return self.kwargs["codec"].encode(obj)

        def _loads(self, s: bytes) -> Any:
            return self.kwargs["codec"].decode(s)

    # The codec travels in kwargs because faust clones codecs via
    # type(self)(children=..., **self.kwargs) when chaining with "|".
    faust_codec = _FaustAvroCodec(codec=codec)
    codecs.register(name, faust_codec)
    return faust_codec


# --- sample data and backward compatibility ---------------------------------

_PRIMITIVE_SAMPLES: dict[str, Any] = {
    "null": None,
    "int": 7,
    "long": 1_700_000_000_000,  # also a plausible timestamp-millis
    "float": 1.5,
    "double": 2.5,
    "bytes": b"\x01\x02",
    "string": "s",
}


def sample_datum(schema: Any, variant: int = 0) -> Any:
    """A valid datum for a parsed schema.

    ``variant`` rotates union branches, enum symbols and booleans so a few
    variants exercise every branch and symbol.
    """
    named = schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}

    def gen(node: Any, depth: int) -> Any:
        if depth > 32:
            raise ValueError("schema nests too deeply (recursive type?)")
        if isinstance(node, list):
            return gen(node[variant % len(node)], depth + 1)
        if isinstance(node, str):
            if node in named:
                return gen(named[node], depth + 1)
            node = {"type": node}
        kind = node["type"]
        if isinstance(kind, (list, dict)) or kind in named:
            return gen(kind, depth + 1)
        if kind == "record":
            return {f["name"]: gen(f["type"], depth + 1) for f in node["fields"]}
        if kind == "enum":
            return node["symbols"][variant % len(node["symbols"])]
        if kind == "array":
            return [gen(node["items"], depth + 1)]
        if kind == "map":
            return {"k": gen(node["values"], depth + 1)}
        if kind == "fixed":
            return bytes(node["size"])
        if kind == "boolean":
            return variant % 2 == 1
        if node.get("logicalType") == "uuid":
            return "00000000-0000-4000-8000-000000000000"
        if kind in _PRIMITIVE_SAMPLES:
            return _PRIMITIVE_SAMPLES[kind]
        raise ValueError(f"cannot generate a sample for {kind!r}")

    return gen(schema, 0)


def _variant_count(schema: Any) -> int:
    # Enough variants to hit every enum symbol and union branch once.
    widest = 2
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            widest = max(widest, len(node))
            stack.extend(node)
        elif isinstance(node, dict):
            if node.get("type") == "enum":
                widest = max(widest, len(node["symbols"]))
            stack.extend(v for k, v in node.items() if k in ("type", "items", "values"))
            stack.extend(f["type"] for f in node.get("fields", []))
            stack.extend(node.get("__named_schemas", {}).values())
    return widest


def compatibility_problems(catalog: SchemaCatalog) -> list[str]:
    """Every released schema version must be readable by the current schema."""
    problems = []
    for event_type, versions in sorted(catalog.released().items()):
        if event_type not in catalog.event_types():
            problems.append(f"{event_type}: released (v{max(versions)}) but has no current schema")
            continue
        reader = _plain(catalog.expanded(event_type))
        for version, raw in sorted(versions.items()):
            writer = _plain(raw)
            for variant in range(_variant_count(writer)):
                out = io.BytesIO()
                try:
                    schemaless_writer(out, writer, sample_datum(writer, variant))
                    out.seek(0)
                    schemaless_reader(out, writer, reader)
                # Whatever fastavro raises here, old data would not be readable.
                except Exception as exc:  # noqa: BLE001
                    problems.append(
                        f"{event_type}: current schema cannot read v{version} data: {type(exc).__name__}: {exc}"
                    )
                    break
    return problems


def unreleased(catalog: SchemaCatalog) -> list[str]:
    """Event types whose current schema is not yet frozen in schemas/released/.

    Whatever a worker writes must stay readable after the next change, so the current schema
    is frozen before it reaches the log, not when it is replaced."""
    frozen = {SchemaCatalog._fp_of(raw) for versions in catalog.released().values() for raw in versions.values()}
    return [e for e in catalog.event_types() if catalog.fingerprint(e) not in frozen]


def freeze_released(catalog: SchemaCatalog | None = None) -> list[Path]:
    """Write <event>.v<next>.avsc for every event whose current schema is not frozen yet; never overwrites."""
    catalog = catalog or SchemaCatalog.default()
    released = catalog.released()
    target = catalog.root / "released"
    target.mkdir(exist_ok=True)
    written = []
    for event_type in unreleased(catalog):
        version = max(released.get(event_type, {0: None})) + 1
        path = target / f"{snake_case(event_type)}.v{version}.avsc"
        if path.exists():
            continue
        path.write_text(json.dumps(catalog.expanded(event_type), indent=2) + "\n")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if argv == ["freeze"]:
        for path in freeze_released(SchemaCatalog(SCHEMAS_DIR)):
            print(f"wrote {path}")
        return 0
    if argv == ["check"]:
        problems = compatibility_problems(SchemaCatalog(SCHEMAS_DIR))
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print("all released schemas are readable by the current schemas")
        return 1 if problems else 0
    print("usage: python -m connectors.avro {freeze|check}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
