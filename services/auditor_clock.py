"""The auditor's time: the log's own while it catches up, the wall clock's once it has.

The ledger judges a payment once it has been quiet for `quiet_s`. While catching up, minutes of
the log are read in seconds and topics at different paces, so wall-clock quiet means nothing:
time is then how far every partition still being read has got, by the timestamps of the last
messages read (`now`), and each event is stamped with its own. A payment quiet by that time has
had every partition read past its last event plus `quiet_s`, so its later events, if any, are
news, as they would be live. Partitions read further ahead than PACE_AHEAD_S are paused
(`ahead`), so the payments open at once are those of a few seconds of the log.

Once caught up, time goes on from there at the wall clock's pace (monotonic), so the books'
times stay comparable; a checkpoint stores it and a resumed auditor starts from it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from aiokafka import TopicPartition

# Each second of log held open costs the payments written in it (a few KB each): a full
# re-audit of a log written at 1,900 payments/s peaked at 281 MiB with 5 s, 189 MiB with 0.5 s
# (and 3,000 wallets a catch-up checkpoint), and read it faster.
PACE_AHEAD_S = 0.5


class LogClock:
    def __init__(self) -> None:
        self.read_up_to: dict[TopicPartition, float] = {}  # log time of the last message read
        self.log_time = 0.0  # how far every partition still being read has got
        self.offset: float | None = None  # once caught up: monotonic + offset

    def resume_at(self, stored: float) -> None:
        self.log_time = stored

    def read(self, tp: TopicPartition, stamp: float) -> None:
        self.read_up_to[tp] = stamp

    def ahead(self, lagging: Iterable[TopicPartition]) -> set[TopicPartition]:
        """Advance the log time to the least read of the partitions still being read (once each
        has been read at all); those further ahead than PACE_AHEAD_S, to be paused."""
        lagging = list(lagging)
        if lagging and all(tp in self.read_up_to for tp in lagging):
            # Not kept from a checkpoint's time if the log says less: that would judge early.
            self.log_time = min(self.read_up_to[tp] for tp in lagging)
        return {tp for tp in lagging if self.read_up_to.get(tp, self.log_time) > self.log_time + PACE_AHEAD_S}

    def caught_up(self) -> None:
        """Every partition read to its end: the log's time is that of the latest message read."""
        if self.offset is None:
            self.log_time = max([self.log_time, *self.read_up_to.values()])
            self.offset = self.log_time - time.monotonic()

    def now(self) -> float:
        return self.log_time if self.offset is None else time.monotonic() + self.offset
