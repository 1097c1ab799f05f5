"""The auditor's time while catching up is how far every partition still being read has got on
the log, and a partition read further ahead than the others is paused."""

from __future__ import annotations

from aiokafka import TopicPartition

from services.auditor_clock import PACE_AHEAD_S, LogClock

A, B, C = (TopicPartition("t", n) for n in range(3))


def test_the_log_time_waits_for_every_partition_being_read_then_follows_the_least_read() -> None:
    clock = LogClock()
    clock.resume_at(50.0)
    clock.read(A, 100.0)
    assert clock.ahead([A, B]) == {A} and clock.now() == 50.0  # B not read yet: time stands still
    clock.read(B, 100.0 + PACE_AHEAD_S / 2)
    assert clock.ahead([A, B]) == set() and clock.now() == 100.0
    clock.read(B, 100.0 + PACE_AHEAD_S + 1)
    assert clock.ahead([A, B]) == {B}  # too far ahead of A: paused until A gets there
    assert clock.ahead([B]) == set() and clock.now() == 100.0 + PACE_AHEAD_S + 1  # A done: only B counts


def test_once_caught_up_time_goes_on_from_the_log_time_at_the_wall_clock_pace() -> None:
    clock = LogClock()
    clock.read(C, 1_000.0)
    clock.read(A, 900.0)
    clock.ahead([A, C])
    assert clock.now() == 900.0
    clock.caught_up()  # every partition read to its end: the latest message read sets the time
    assert 1_000.0 <= clock.now() < 1_001.0
    clock.read(C, 5_000.0)
    assert clock.now() < 1_001.0  # events read live no longer move it
