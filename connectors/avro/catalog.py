"""The Avro event catalog: every event's schema from schemas/ (named types inlined), its topic,
its CRC-64-AVRO fingerprint, and the released versions frozen in schemas/released/.

Timestamps stay plain ``int`` epoch millis in event dicts, both ways.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema
from fastavro.schema import UnknownType, to_parsing_canonical_form

Schema = dict[str, Any]

SCHEMAS_DIR = Path(__file__).resolve().parent.parent.parent / "schemas"
_RELEASED_NAME = re.compile(r"^(?P<stem>[a-z0-9_]+)\.v(?P<version>[0-9]+)\.avsc$")


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


def short_name(fullname: str) -> str:
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


def plain(expanded: Schema) -> Schema:
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
        self._also_on: dict[str, tuple[str, ...]] = {}
        for path in sorted(self.root.glob("*.avsc")):
            try:
                parsed = _parse(_load_json(path), dict(named))
            except Exception as exc:
                raise ValueError(f"{path}: {exc}") from exc
            event_type = short_name(parsed["name"])
            if event_type in self._schemas:
                raise ValueError(f"{path}: event type {event_type} defined twice")
            topic = str(parsed.get("topic") or "")
            if not topic:
                raise ValueError(f"{path}: missing top-level 'topic' attribute")
            expanded = _expand(parsed)
            self._expanded[event_type] = expanded
            self._schemas[event_type] = _parse(expanded)
            self._topics[event_type] = topic
            self._also_on[event_type] = tuple(parsed.get("also_on") or ())
        self._released: dict[str, dict[int, Schema]] = {}
        for path in sorted((self.root / "released").glob("*.avsc")):
            match = _RELEASED_NAME.match(path.name)
            if match is None:
                raise ValueError(f"{path}: released files are named <event>.v<N>.avsc")
            raw = _load_json(path)
            _parse(raw)  # fail fast on a corrupt frozen file
            versions = self._released.setdefault(short_name(raw["name"]), {})
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

    def also_on(self, event_type: str) -> tuple[str, ...]:
        """Topics beside its own that carry the event type (`also_on`), each with one writer."""
        self._require(event_type)
        return self._also_on[event_type]

    def event_types_on(self, topic: str) -> list[str]:
        return sorted(e for e, t in self._topics.items() if t == topic or topic in self._also_on[e])

    def topics(self) -> list[str]:
        return sorted(set(self._topics.values()).union(*self._also_on.values()))

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
