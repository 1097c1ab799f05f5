"""Web pages every worker serves besides its table views: readiness and metrics.

Readiness means progress: a worker whose consumer has lag on a partition but has not
moved its read offset there for `STALL_AFTER_S` reports itself unready (faust can leave
a consumer stuck after a rebalance; a supervisor should restart such a worker).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, cast

import faust

from connectors.metrics import CONSUMER_LAG, exposition

STALL_AFTER_S = 30.0
SAMPLE_EVERY_S = 5.0


@dataclass
class ProgressWatch:
    """Per partition: the last read offset seen and when it last moved."""

    group: str
    seen: dict[Any, tuple[int | None, float]] = field(default_factory=dict)
    stalled: dict[str, int] = field(default_factory=dict)

    def sample(self, consumer: Any, now: float) -> None:
        stalled = {}
        for tp in consumer.assignment():
            if tp.topic.endswith("-changelog"):
                continue  # read only while recovering; afterwards its end moves with our own writes
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - no fetch yet for this partition: nothing to judge
                continue
            read = consumer._read_offset.get(tp)  # faust keeps the last offset handed to the stream here
            lag = max(0, (highwater or 0) - ((read + 1) if read is not None else 0))
            CONSUMER_LAG.labels(self.group, tp.topic, str(tp.partition)).set(lag)
            previous, since = self.seen.get(tp, (None, now))
            if read != previous:
                since = now
            self.seen[tp] = (read, since)
            if lag > 0 and now - since > STALL_AFTER_S:
                stalled[f"{tp.topic}/{tp.partition}"] = lag
        self.stalled = stalled


def add_worker_pages(app: faust.App) -> None:
    watch = ProgressWatch(app.conf.id)

    @app.timer(SAMPLE_EVERY_S)
    async def sample_progress() -> None:
        if app.consumer is not None and not app.rebalancing:
            watch.sample(app.consumer, time.monotonic())

    @app.page("/ready/")
    async def ready(web: Any, request: Any) -> Any:
        """200 once partitions are assigned, tables recovered and every lagging partition moves."""
        recovered = cast(Any, app.tables).recovery.completed.is_set()  # not on the TableManagerT protocol
        assigned = bool(app.consumer.assignment()) if app.consumer else False
        state = {
            "rebalancing": app.rebalancing,
            "tables_recovered": recovered,
            "assigned": assigned,
            "stalled_partitions": watch.stalled,
        }
        ok = recovered and not app.rebalancing and assigned and not watch.stalled
        return web.json({"status": "ready" if ok else "unready", **state}, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        body, content_type = exposition()
        return web.bytes(body, content_type=content_type.split(";")[0])
