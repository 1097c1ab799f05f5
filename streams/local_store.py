"""A worker's local table store (RocksDB) belongs to one Kafka log.

The store remembers, per partition, the changelog offset it holds; on start faust reads the
changelog from there on. A store written against another log (a broker reset or replaced, the
topics recreated) would be read as if it were current and never corrected: it is recognised by
the cluster id recorded beside it, and removed, so the worker restores from the changelog.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)
MARKER = "kafka-cluster-id"


def match_store_to_log(datadir: Path, cluster_id: Callable[[], str | None]) -> bool:
    """Empties `datadir` if its store was written against another Kafka cluster; True if it did.
    Unknown (the broker does not answer yet): the store is kept, and judged at the next start."""
    current = cluster_id()
    if current is None:
        log.warning("cannot ask Kafka for its cluster id; keeping the local store in %s unchecked", datadir)
        return False
    marker = datadir / MARKER
    recorded = marker.read_text().strip() if marker.exists() else None
    emptied = False
    if recorded != current and any(p for p in datadir.iterdir() if p.name != MARKER):
        log.warning(
            "local store in %s was written against Kafka cluster %s, not %s: removing it; the tables restore "
            "from their changelogs",
            datadir,
            recorded or "(unrecorded)",
            current,
        )
        for path in datadir.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        emptied = True
    datadir.mkdir(parents=True, exist_ok=True)
    marker.write_text(current + "\n")
    return emptied
