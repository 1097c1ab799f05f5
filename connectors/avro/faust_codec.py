"""faust's side: the codec registered so faust can hand Avro values to agents that ask for it."""

from __future__ import annotations

from typing import Any

from connectors.avro.codec import Codec


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
