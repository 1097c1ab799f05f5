from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema

from connectors.avro import SCHEMAS_DIR, SchemaCatalog, SingleObjectCodec
from connectors.avro.catalog import snake_case
from devtools.schemas import compatibility_problems, freeze_released, unreleased
from tests.support.avro_samples import sample_datum

CATALOG = SchemaCatalog.default()
ALL_FILES = sorted(SCHEMAS_DIR.rglob("*.avsc"))
EVENT_FILES = sorted(SCHEMAS_DIR.glob("*.avsc"))

TOPICS = {
    "PaymentCreated": "payment.created",
    "PaymentOperationCompleted": "payment.payment_operation.completed",
    "PaymentOperationInconsistent": "payment.payment_operation.inconsistent",
    "PaymentOperationPending": "payment.payment_operation.completed",
    "PaymentSucceeded": "payment.success",
    "PaymentFailed": "payment.failed",
    "RefundRequested": "payment.refund",
    "PaymentRefunded": "payment.refunded",
    "RefundFailed": "payment.refund_failed",
    "MovementRequired": "wallet.movement_required",
    "WalletOpenRequested": "wallet.movement_required",
    "MovementUpdated": "wallet.movement_updates",
    "WalletOpened": "wallet.movement_updates",
    "BalanceUpdated": "wallet.balance_update",
    "ProviderUpdate": "external-provider-events",
    "DeadLetter": "payment.dlq",
}


def nodes(schema: Any) -> Iterator[Any]:
    """Every type node of a raw schema, including field definitions."""
    stack = [schema]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            stack.extend(node[k] for k in ("type", "items", "values") if k in node)
            stack.extend(node.get("fields", []))


def test_schema_files_found() -> None:
    assert len(EVENT_FILES) == len(TOPICS)
    assert len(list((SCHEMAS_DIR / "released").glob("*.avsc"))) >= len(TOPICS)


def test_topics_match_the_event_map() -> None:
    assert {e: CATALOG.topic_of(e) for e in CATALOG.event_types()} == TOPICS
    assert CATALOG.topics() == sorted({*TOPICS.values(), "wallet.payment_operation.completed"})
    assert CATALOG.event_types_on("wallet.payment_operation.completed") == ["PaymentOperationCompleted"]
    assert CATALOG.event_types_on("wallet.movement_updates") == [
        "MovementUpdated",
        "WalletOpened",
    ]


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.name)
def test_event_file_conventions(path: Path) -> None:
    raw = json.loads(path.read_text())
    assert raw["namespace"] == "payments.events"
    assert path.stem == snake_case(raw["name"])
    assert raw["doc"].startswith("Emitted")
    assert isinstance(raw["topic"], str) and raw["topic"]
    assert raw["fields"][0] == {"name": "envelope", "type": "payments.Envelope"}


@pytest.mark.parametrize("event_type", sorted(TOPICS))
def test_expanded_envelope_is_first(event_type: str) -> None:
    first = CATALOG.expanded(event_type)["fields"][0]
    assert first["name"] == "envelope"
    assert first["type"]["name"] == "payments.Envelope"
    assert [f["name"] for f in first["type"]["fields"]] == [
        "event_id", "event_type", "schema_version", "occurred_at", "correlation_id", "causation_id",
        "actor_subject", "actor_roles",
    ]  # fmt: skip


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(SCHEMAS_DIR)))
def test_no_floating_point_and_money_is_long(path: Path) -> None:
    raw = json.loads(path.read_text())
    for node in nodes(raw):
        assert node not in ("float", "double"), path
        if isinstance(node, dict) and node.get("name") in ("Money", "payments.Money"):
            assert node["fields"][0] == {
                **node["fields"][0],
                "name": "amount",
                "type": "long",
            }


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(SCHEMAS_DIR)))
def test_nullable_fields_default_to_null(path: Path) -> None:
    for node in nodes(json.loads(path.read_text())):
        if isinstance(node, dict) and "name" in node and isinstance(node.get("type"), list):
            assert node["type"][0] == "null" and node.get("default", "missing") is None, node


def test_canonical_forms_are_self_contained() -> None:
    for event_type in CATALOG.event_types():
        canonical = CATALOG.canonical(event_type)
        assert canonical.count('"name":"payments.Envelope"') == 1
        parse_schema(json.loads(canonical))  # raises on duplicate or missing names
        assert len(CATALOG.fingerprint(event_type)) == 8


def test_current_schemas_read_every_released_version() -> None:
    assert set(CATALOG.released()) == set(TOPICS), "run `python -m devtools.schemas freeze`"
    assert compatibility_problems(CATALOG) == []


def test_every_current_schema_is_frozen_before_it_reaches_the_log() -> None:
    # Data written with today's schema must decode after the next change: a change that
    # replaces an unfrozen schema leaves every event it wrote unreadable (unknown fingerprint).
    assert unreleased(CATALOG) == [], "run `python -m devtools.schemas freeze` and commit schemas/released/"


def test_a_changed_schema_is_frozen_as_the_next_version_and_the_old_one_still_decodes(schemas_copy: Path) -> None:
    before = SchemaCatalog(schemas_copy)
    event = sample_datum(before.expanded("PaymentCreated"))
    event["envelope"]["event_type"] = "PaymentCreated"
    old = SingleObjectCodec(before).encode(event)
    _rewrite(
        schemas_copy / "payment_created.avsc",
        lambda raw: raw["fields"].append({"name": "channel", "type": ["null", "string"], "default": None}),
    )
    after = SchemaCatalog(schemas_copy)
    assert unreleased(after) == ["PaymentCreated"]
    [written] = freeze_released(after)
    assert written.name == f"payment_created.v{max(before.released()['PaymentCreated']) + 1}.avsc"
    refrozen = SchemaCatalog(schemas_copy)
    assert unreleased(refrozen) == []
    assert SingleObjectCodec(refrozen).decode(old)["envelope"]["event_type"] == "PaymentCreated"


def _edit_field(name: str, change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        change(next(f for f in raw["fields"] if f["name"] == name))

    return edit


INCOMPATIBLE = {
    "required_field_added": lambda raw: raw["fields"].append({"name": "channel", "type": "string"}),
    "string_to_long": _edit_field("user_id", lambda f: f.update(type="long")),
    "field_renamed": _edit_field("user_id", lambda f: f.update(name="customer_id")),
    "enum_symbol_removed": _edit_field(
        "method",
        lambda f: f.update(type={"type": "enum", "name": "Method2", "symbols": ["wallet"]}),
    ),
}


@pytest.fixture
def schemas_copy(tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, root)
    return root


def _rewrite(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize("case", sorted(INCOMPATIBLE))
def test_incompatible_change_is_reported(schemas_copy: Path, case: str) -> None:
    _rewrite(schemas_copy / "payment_created.avsc", INCOMPATIBLE[case])
    problems = compatibility_problems(SchemaCatalog(schemas_copy))
    assert problems  # one per released version it cannot read
    assert all(problem.startswith("PaymentCreated:") for problem in problems)


def test_optional_field_added_is_compatible(schemas_copy: Path) -> None:
    _rewrite(
        schemas_copy / "payment_created.avsc",
        lambda raw: raw["fields"].append({"name": "channel", "type": ["null", "string"], "default": None}),
    )
    catalog = SchemaCatalog(schemas_copy)
    assert catalog.fingerprint("PaymentCreated") != CATALOG.fingerprint("PaymentCreated")
    assert compatibility_problems(catalog) == []


def test_removed_event_is_reported(schemas_copy: Path) -> None:
    (schemas_copy / "dead_letter.avsc").unlink()
    assert compatibility_problems(SchemaCatalog(schemas_copy)) == [
        f"DeadLetter: released (v{max(CATALOG.released()['DeadLetter'])}) but has no current schema"
    ]


def test_type_files_resolve_in_any_order(schemas_copy: Path) -> None:
    # "a_" sorts before money.avsc, so the first pass cannot resolve it.
    (schemas_copy / "types" / "a_price.avsc").write_text(json.dumps({
        "type": "record", "name": "Price", "namespace": "payments",
        "fields": [{"name": "gross", "type": "payments.Money"}],
    }))  # fmt: skip
    catalog = SchemaCatalog(schemas_copy)
    assert catalog.event_types() == CATALOG.event_types()


def test_unresolvable_type_is_an_error(schemas_copy: Path) -> None:
    (schemas_copy / "types" / "broken.avsc").write_text(json.dumps({
        "type": "record", "name": "Broken", "namespace": "payments",
        "fields": [{"name": "x", "type": "payments.Nowhere"}],
    }))  # fmt: skip
    with pytest.raises(ValueError, match="unresolvable"):
        SchemaCatalog(schemas_copy)
