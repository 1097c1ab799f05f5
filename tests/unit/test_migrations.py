"""Migrations are applied in the order of their numbers, each once: two with one number would
both claim the same row of schema_migrations (two branches merged, each with its own next one)."""

from __future__ import annotations

from connectors.postgres import migration_files


def test_every_migration_has_its_own_number_and_none_is_skipped() -> None:
    numbers = [number for number, _ in migration_files()]
    assert numbers == list(range(1, len(numbers) + 1)), numbers
