"""A reader of Avro binary bodies compiled once per writer schema into nested closures.

fastavro's schemaless_reader re-walks the schema for every record: about 50 µs for one of
our events, which was half of the projector's CPU and nearly all of `payments rebuild`'s.
Reading with a reader compiled from the parsed schema takes a fraction of that. It only
reads what its writer wrote (no schema resolution: an older writer goes through fastavro),
and refuses bytes that run past the end, so a malformed body still fails rather than
decoding into something else.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, cast

Reader = Callable[[bytes, int], tuple[Any, int]]
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")
_MAX_VARINT_BYTES = 10


def read_long(buf: bytes, pos: int) -> tuple[int, int]:
    byte = buf[pos]
    pos += 1
    if byte < 0x80:  # most of our numbers (lengths, small versions): one byte
        return (byte >> 1) ^ -(byte & 1), pos
    value, shift = byte & 0x7F, 7
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7
        if shift >= 7 * _MAX_VARINT_BYTES:
            raise ValueError("varint longer than 10 bytes")


def _span(buf: bytes, pos: int, size: int) -> int:
    end = pos + size
    if size < 0 or end > len(buf):
        raise ValueError(f"a length of {size} runs past the end of the body")
    return end


def read_null(_: bytes, pos: int) -> tuple[None, int]:
    return None, pos


def read_boolean(buf: bytes, pos: int) -> tuple[bool, int]:
    return buf[pos] != 0, pos + 1


def read_float(buf: bytes, pos: int) -> tuple[float, int]:
    return _FLOAT.unpack_from(buf, pos)[0], _span(buf, pos, 4)


def read_double(buf: bytes, pos: int) -> tuple[float, int]:
    return _DOUBLE.unpack_from(buf, pos)[0], _span(buf, pos, 8)


def read_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    size, pos = read_long(buf, pos)
    end = _span(buf, pos, size)
    return buf[pos:end], end


def read_string(buf: bytes, pos: int) -> tuple[str, int]:
    size, pos = read_long(buf, pos)
    end = _span(buf, pos, size)
    return buf[pos:end].decode(), end


PRIMITIVES: dict[str, Reader] = {
    "null": read_null,
    "boolean": read_boolean,
    "int": read_long,
    "long": read_long,
    "float": read_float,
    "double": read_double,
    "bytes": read_bytes,
    "string": read_string,
}


def _enum(symbols: list[str]) -> Reader:
    def read(buf: bytes, pos: int) -> tuple[str, int]:
        index, pos = read_long(buf, pos)
        if not 0 <= index < len(symbols):
            raise ValueError(f"enum index {index} out of range")
        return symbols[index], pos

    return read


def _fixed(size: int) -> Reader:
    def read(buf: bytes, pos: int) -> tuple[bytes, int]:
        end = _span(buf, pos, size)
        return buf[pos:end], end

    return read


def _blocks(item: Reader, keyed: bool) -> Reader:
    """Arrays and maps: blocks of items, a negative count followed by the block's byte size."""

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        items: list[Any] = []
        pairs: dict[str, Any] = {}
        while True:
            count, pos = read_long(buf, pos)
            if count == 0:
                return (pairs if keyed else items), pos
            if count < 0:
                count = -count
                _, pos = read_long(buf, pos)
            _span(buf, pos, count)  # each item takes at least a byte: a huge count is garbage
            for _ in range(count):
                if keyed:
                    key, pos = read_string(buf, pos)
                    pairs[key], pos = item(buf, pos)
                else:
                    value, pos = item(buf, pos)
                    items.append(value)

    return read


def _union(branches: list[Reader]) -> Reader:
    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        index, pos = read_long(buf, pos)
        if not 0 <= index < len(branches):
            raise ValueError(f"union index {index} out of range")
        return branches[index](buf, pos)

    return read


# Straight-line code for the fields most of ours are, read into `x`: one call per record
# instead of one per field (the calls were most of the reading time).
_LONG = """b = buf[pos]; pos += 1
if b < 128: x = (b >> 1) ^ -(b & 1)
else: x, pos = read_long(buf, pos - 1)"""
_STRING = """b = buf[pos]; pos += 1
if b < 128: n = (b >> 1) ^ -(b & 1)
else: n, pos = read_long(buf, pos - 1)
e = pos + n
if n < 0 or e > size: raise ValueError(f"a length of {n} runs past the end of the body")
x = buf[pos:e].decode(); pos = e"""
_INLINE = {"long": _LONG, "int": _LONG, "string": _STRING, "null": "x = None"}


def _inline(node: Any) -> str | None:
    """The field's code when it is a long, a string, null, or one of those or null."""
    if isinstance(node, str):
        return _INLINE.get(node)
    if isinstance(node, list) and len(node) == 2 and node[0] == "null" and isinstance(node[1], str):
        other = _INLINE.get(node[1])
        if other is None:
            return None
        # The union's index is 0 (byte 00) or 1 (byte 02): anything else is not our writer's.
        branch = "\n".join("    " + line for line in other.splitlines())
        return f"b = buf[pos]; pos += 1\nif b == 0: x = None\nelif b == 2:\n{branch}\nelse: raise ValueError('union')"
    return None


def _record(fields: list[tuple[str, Any, Reader]]) -> Reader:
    """Fields as (name, schema, reader): inlined when `_inline` knows the schema, else called."""
    lines = ["def read(buf, pos):", "    size = len(buf)"]
    scope: dict[str, Any] = {"read_long": read_long}
    for k, (_, node, reader) in enumerate(fields):
        code = _inline(node)
        if code is None:
            scope[f"f{k}"] = reader
            code = f"x, pos = f{k}(buf, pos)"
        lines += ["    " + line for line in code.splitlines()] + [f"    v{k} = x"]
    body = ", ".join(f"{name!r}: v{k}" for k, (name, _, _) in enumerate(fields))
    lines.append(f"    return {{{body}}}, pos")
    exec("\n".join(lines), scope)  # the source is built above from field positions only
    return cast(Reader, scope["read"])


def _late(named: dict[str, Reader], name: str) -> Reader:
    """A record's reader that calls one compiled after it (a record that refers to itself)."""
    return lambda buf, pos: named[name](buf, pos)


def compile_reader(schema: Any) -> Reader:
    """The reader of a schema parsed by fastavro (named types by their full name)."""
    named: dict[str, Reader] = {}

    def build(node: Any) -> Reader:
        if isinstance(node, list):
            return _union([build(branch) for branch in node])
        if isinstance(node, str):
            if node in PRIMITIVES:
                return PRIMITIVES[node]
            return named[node]  # a named type: Avro defines a name before its use
        kind = node["type"]
        if kind == "record":
            named[node["name"]] = _late(named, node["name"])  # until compiled: it may refer to itself
            fields = [(field["name"], field["type"], build(field["type"])) for field in node["fields"]]
            named[node["name"]] = _record(fields)
            return named[node["name"]]
        if kind == "enum":
            named[node["name"]] = _enum(list(node["symbols"]))
        elif kind == "fixed":
            named[node["name"]] = _fixed(int(node["size"]))
        elif kind in ("array", "map"):
            return _blocks(build(node["items" if kind == "array" else "values"]), keyed=kind == "map")
        else:
            return build(kind)  # {"type": "string"} and the like
        return named[node["name"]]

    return build(schema)


def read_with(reader: Reader, body: bytes) -> dict[str, Any]:
    """The record of this body; ValueError (or an IndexError inside) when it is not one."""
    value, end = reader(body, 0)
    if end != len(body):
        raise ValueError(f"{len(body) - end} trailing bytes after Avro body")
    if not isinstance(value, dict):
        raise ValueError("Avro body is not a record")
    return value
