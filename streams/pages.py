"""Web pages every worker serves besides its table views: readiness and metrics.

Readiness tells a supervisor the truth: a worker is ready when it holds partitions, its
tables are recovered, no partition is paused on an infrastructure failure, and every
partition with lag keeps moving. A partition behind its end that has not advanced for
`stall_after_s` is stalled: the worker reports itself unready (a supervisor should restart
it) and, first, asks the consumer to fetch again from the next offset it owes, which is
what unsticks a partition whose records the consumer library dropped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from aiokafka import TopicPartition

from connectors.metrics import CONSUMER_LAG, CONSUMER_STALLED_SECONDS, exposition
from streams.delivery import DeliveryGuard
from streams.processing import Processor

log = logging.getLogger(__name__)
SAMPLE_EVERY_S = 2.0
# A partition with lag that has not moved for two samples is fetched again: at half of
# stall_after_s (15 s) a backlog drained in bursts, nothing completing for up to 37 s at a time
# (`python -m devtools.bench.drain`). Fetching again is harmless when it was not needed: the
# delivery guard hands on every offset once, in order.
NUDGE_AFTER_S = 4.0


@dataclass
class ProgressWatch:
    """Per partition: the next offset owed and since when it has not moved while behind."""

    group: str
    stall_after_s: float
    seen: dict[Any, tuple[int | None, float]] = field(default_factory=dict)
    stalled: dict[str, int] = field(default_factory=dict)
    nudged: dict[Any, int | None] = field(default_factory=dict)

    def sample(self, consumer: Any, guard: DeliveryGuard | None, now: float) -> list[tuple[Any, int]]:
        """Update lag and stalls; return the partitions to fetch again, with the offset to fetch from."""
        stalled, nudge = {}, []
        for tp in consumer.assignment():
            if tp.topic.endswith("-changelog"):
                continue  # read only while recovering; afterwards its end moves with our own writes
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - no fetch yet for this partition: nothing to judge
                continue
            owed = guard.next_offset(TopicPartition(tp.topic, tp.partition)) if guard is not None else None
            if owed is None:
                read = consumer._read_offset.get(tp)  # faust's last offset handed to the stream
                owed = read + 1 if read is not None else None
            lag = max(0, (highwater or 0) - (owed or 0))
            CONSUMER_LAG.labels(self.group, tp.topic, str(tp.partition)).set(lag)
            previous, since = self.seen.get(tp, (None, now))
            if owed != previous or lag == 0:
                since = now
            self.seen[tp] = (owed, since)
            stuck_for = now - since
            CONSUMER_STALLED_SECONDS.labels(self.group, tp.topic, str(tp.partition)).set(stuck_for if lag else 0)
            nudge_after = min(NUDGE_AFTER_S, self.stall_after_s / 2)
            if lag > 0 and stuck_for > nudge_after and self.nudged.get(tp) != owed and owed is not None:
                nudge.append((tp, owed))
                self.nudged[tp] = owed
            if lag > 0 and stuck_for > self.stall_after_s:
                stalled[f"{tp.topic}/{tp.partition}"] = lag
        self.stalled = stalled
        return nudge


def add_worker_pages(
    app: faust.App, processor: Processor | None = None, guard: DeliveryGuard | None = None, stall_after_s: float = 30.0
) -> None:
    """The pages of a worker; without a processor and guard (a worker that does not use the
    pipeline) readiness judges progress by faust's read offsets alone."""
    watch = ProgressWatch(app.conf.id, stall_after_s)
    paused: dict[str, str] = processor.paused if processor is not None else {}

    @app.timer(SAMPLE_EVERY_S)
    async def sample_progress() -> None:
        if app.consumer is None or app.rebalancing:
            return
        for tp, offset in watch.sample(app.consumer, guard, time.monotonic()):
            if f"{tp.topic}/{tp.partition}" in paused:
                continue  # waiting out an outage on purpose
            log.warning(
                "%s: %s/%d behind and not moving; fetching again from %d", app.conf.id, tp.topic, tp.partition, offset
            )
            await app.consumer.seek(tp, offset)

    @app.page("/ready/")
    async def ready(web: Any, request: Any) -> Any:
        """200 once partitions are assigned, tables recovered, nothing paused and nothing stalled."""
        recovered = cast(Any, app.tables).recovery.completed.is_set()  # not on the TableManagerT protocol
        assigned = bool(app.consumer.assignment()) if app.consumer else False
        state = {
            "rebalancing": app.rebalancing,
            "tables_recovered": recovered,
            "assigned": assigned,
            "paused_partitions": dict(paused),
            "stalled_partitions": watch.stalled,
        }
        ok = recovered and not app.rebalancing and assigned and not paused and not watch.stalled
        return web.json({"status": "ready" if ok else "unready", **state}, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        body, content_type = exposition()
        return web.bytes(body, content_type=content_type.split(";")[0])
