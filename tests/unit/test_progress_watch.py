"""When a worker asks its consumer to fetch a partition again, and when it calls itself stalled."""

from __future__ import annotations

from aiokafka import TopicPartition

from streams.pages import NUDGE_AFTER_S, ProgressWatch

TP = TopicPartition("payment.created", 0)


class Consumer:
    def __init__(self, highwater: int) -> None:
        self.end = highwater

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def highwater(self, tp: TopicPartition) -> int:
        return self.end


class Guard:
    def __init__(self, owed: int) -> None:
        self.owed = owed

    def next_offset(self, tp: TopicPartition) -> int:
        return self.owed


def test_a_partition_behind_and_not_moving_is_fetched_again_once_soon_and_stalled_later() -> None:
    watch, consumer, guard = ProgressWatch("payment-worker", stall_after_s=30.0), Consumer(100), Guard(40)
    assert watch.sample(consumer, guard, 0.0) == []  # type: ignore[arg-type]
    assert watch.sample(consumer, guard, NUDGE_AFTER_S - 0.5) == []  # type: ignore[arg-type]
    assert watch.sample(consumer, guard, NUDGE_AFTER_S + 0.5) == [(TP, 40)]  # type: ignore[arg-type]
    assert watch.sample(consumer, guard, NUDGE_AFTER_S + 2.5) == []  # type: ignore[arg-type]  # once per offset
    assert watch.stalled == {}
    watch.sample(consumer, guard, 31.0)  # type: ignore[arg-type]
    assert watch.stalled == {"payment.created/0": 60}


def test_a_partition_that_moves_or_has_no_lag_is_left_alone() -> None:
    watch, consumer, guard = ProgressWatch("payment-worker", stall_after_s=30.0), Consumer(100), Guard(40)
    for second in range(0, 20, 2):
        guard.owed += 1  # moving, however slowly
        assert watch.sample(consumer, guard, float(second)) == []  # type: ignore[arg-type]
    caught_up = Guard(100)
    assert watch.sample(consumer, caught_up, 25.0) == []  # type: ignore[arg-type]
    assert watch.sample(consumer, caught_up, 40.0) == []  # type: ignore[arg-type]
    assert watch.stalled == {}


def test_a_short_stall_limit_nudges_at_half_of_it() -> None:
    watch, consumer, guard = ProgressWatch("wallet-worker", stall_after_s=4.0), Consumer(10), Guard(5)
    watch.sample(consumer, guard, 0.0)  # type: ignore[arg-type]
    assert watch.sample(consumer, guard, 2.5) == [(TP, 5)]  # type: ignore[arg-type]
