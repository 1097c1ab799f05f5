"""Documentation generated from code must match the code."""

from __future__ import annotations

from pathlib import Path

from connectors.avro import SchemaCatalog
from devtools.catalog_doc import render

ROOT = Path(__file__).resolve().parents[2]


def test_the_event_catalog_matches_the_schemas() -> None:
    written = (ROOT / "docs" / "event-catalog.md").read_text()
    assert written == render(SchemaCatalog.default()), "run: python -m devtools.catalog_doc > docs/event-catalog.md"


def test_the_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text().split("\n## ")[0]
    assert "make run" in head and "make test" in head


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
