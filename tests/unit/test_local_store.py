"""A local table store is kept only for the Kafka cluster it was written against."""

from __future__ import annotations

from pathlib import Path

from streams.local_store import MARKER, match_store_to_log


def a_store(datadir: Path) -> Path:
    table = datadir / "v1" / "tables" / "payments-0.db"
    table.mkdir(parents=True)
    (table / "CURRENT").write_text("MANIFEST-000001\n")
    return table


def test_a_store_of_the_same_cluster_is_kept(tmp_path: Path) -> None:
    assert match_store_to_log(tmp_path, lambda: "cluster-a") is False  # the first start records it
    table = a_store(tmp_path)
    assert match_store_to_log(tmp_path, lambda: "cluster-a") is False
    assert (table / "CURRENT").exists()


def test_a_store_of_another_cluster_is_removed_so_the_tables_restore_from_the_log(tmp_path: Path) -> None:
    match_store_to_log(tmp_path, lambda: "cluster-a")
    table = a_store(tmp_path)

    assert match_store_to_log(tmp_path, lambda: "cluster-b") is True

    assert not table.exists()
    assert (tmp_path / MARKER).read_text().strip() == "cluster-b"


def test_an_unrecorded_store_is_not_trusted_and_an_unreachable_broker_changes_nothing(tmp_path: Path) -> None:
    table = a_store(tmp_path)
    assert match_store_to_log(tmp_path, lambda: None) is False
    assert table.exists(), "the broker did not answer: nothing to judge by"
    assert match_store_to_log(tmp_path, lambda: "cluster-a") is True, "a store without a marker is of unknown origin"
    assert not table.exists()
