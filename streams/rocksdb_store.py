"""faust's RocksDB table store, closing a partition's database when the partition is revoked.

faust drops a revoked partition's database without closing it (the close is commented out in
faust 0.15.3) and leaves it to the garbage collector. When a rebalance takes a partition away
and gives it back in the same process, as a standby or active again, opening it finds the
previous handle still holding the RocksDB LOCK file, and the worker crashes ("IO error: While
lock file ... Resource temporarily unavailable"; seen in the fault suite's kill-in-rebalance).
"""

from __future__ import annotations

from typing import Any

from faust.stores import STORES
from faust.stores.rocksdb import Store as FaustRocksDBStore


class Store(FaustRocksDBStore):
    def revoke_partitions(self, table: Any, tps: Any) -> None:
        for tp in tps:
            if tp.topic in table.changelog_topic.topics:
                db = self._dbs.pop(tp.partition, None)
                if db is not None:
                    self.log.info("closing db %s partition %s", tp.topic, tp.partition)
                    db.close()


def use_closing_rocksdb_store() -> None:
    """`rocksdb://` in the configuration means this store (idempotent)."""
    STORES.aliases["rocksdb"] = f"{__name__}:Store"
