"""How the workers' tables store their values: JSON written by orjson.

faust's own `json` codec goes through the standard library's encoder with a custom class: a
twentieth of the payment worker's CPU with full batches went to encoding table rows. The bytes
are JSON either way, so a changelog written by either codec is read by the other. Keys keep
faust's codec: the local store looks rows up by the key's bytes, which must not change."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from faust.serializers import codecs

NAME = "orjson"
T = TypeVar("T")


class OrjsonCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


def install_table_codec() -> None:
    """Register the codec with faust (idempotent)."""
    codecs.register(NAME, OrjsonCodec())


def with_orjson_values(table: T) -> T:
    """`table`'s values written with this codec. faust takes a table's serializer only from a
    model type (plain values get "json"), and reads the attribute when it builds the table's
    store and changelog topic, at start; so it is set right after the table is declared."""
    table.value_serializer = NAME  # type: ignore[attr-defined]
    return table
