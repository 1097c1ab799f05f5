"""Valid example data for any Avro schema, for codec and compatibility tests."""

from __future__ import annotations

from typing import Any

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


def variant_count(schema: Any) -> int:
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
