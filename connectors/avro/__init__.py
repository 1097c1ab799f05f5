"""Avro on the wire, one module per job: the schema catalog (`catalog`), the codec contract
(`codec`), Avro single-object encoding (`single_object`, the default: no registry), the Confluent
wire format (`confluent`, when a registry is configured) and faust's hook (`faust_codec`).
Freezing released schemas and checking their compatibility is development tooling:
`python -m devtools.schemas freeze|check`."""

from __future__ import annotations

from connectors.avro.catalog import SCHEMAS_DIR, SchemaCatalog, rabin_fingerprint
from connectors.avro.codec import Codec, EventDecodeError, EventEncodeError
from connectors.avro.confluent import ConfluentCodec
from connectors.avro.faust_codec import install_faust_codec
from connectors.avro.single_object import SingleObjectCodec

__all__ = [
    "SCHEMAS_DIR",
    "Codec",
    "ConfluentCodec",
    "EventDecodeError",
    "EventEncodeError",
    "SchemaCatalog",
    "SingleObjectCodec",
    "install_faust_codec",
    "make_codec",
    "rabin_fingerprint",
]


def make_codec(registry_url: str | None, catalog: SchemaCatalog | None = None) -> Codec:
    if registry_url:
        return ConfluentCodec(registry_url, catalog)
    return SingleObjectCodec(catalog)
