"""The id helpers are written without the uuid module's objects, for speed: they must still give
exactly its answers, or every derived id of the event log would change."""

from __future__ import annotations

import random
import string
import uuid

from domain.ids import NAMESPACE, derive_id, is_uuid, uuid_text


def _reference_is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def test_derived_ids_are_the_uuid_modules_uuid5() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        parts = [
            "".join(rng.choices(string.printable + "éü😀", k=rng.randint(0, 40))) for _ in range(rng.randint(1, 4))
        ]
        assert derive_id(*parts) == str(uuid.uuid5(NAMESPACE, "/".join(parts)))


def test_uuid_text_is_the_uuid_modules_text() -> None:
    rng = random.Random(6)
    for bits in [0, 2**128 - 1, *(rng.getrandbits(128) for _ in range(2000))]:
        for version in (4, 5):
            assert uuid_text(bits, version) == str(uuid.UUID(int=bits, version=version))


def test_only_the_canonical_text_form_is_a_uuid() -> None:
    one = uuid.uuid4()
    forms = [str(one), str(one).upper(), f"{{{one}}}", one.hex, f"urn:uuid:{one}", f"{one}\n", f" {one}", "", None, 5]
    forms += ["\u0660" * 8 + "-0000-0000-0000-000000000000", str(one).replace("-", "_")]
    rng = random.Random(7)
    forms += ["".join(rng.choices("0123456789abcdefABCDEF-g{}", k=36)) for _ in range(2000)]
    for form in forms:
        assert is_uuid(form) == _reference_is_uuid(form), form
    assert is_uuid(str(one)) and is_uuid(str(one).upper())
