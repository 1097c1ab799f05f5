"""Admission control: past capacity a command is refused at once, with Retry-After."""

from __future__ import annotations

import asyncio

import pytest

from services.admission import MIN_QUEUE, Admission
from services.http import ApiError


async def test_a_request_beyond_the_in_flight_bound_is_refused_at_once_and_one_slot_frees_it() -> None:
    admission = Admission(max_in_flight=2, max_behind_s=60.0)
    release = asyncio.Event()

    async def hold() -> None:
        async with admission.admitted("create_payment"):
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(ApiError) as refused:
        async with admission.admitted("create_payment"):
            raise AssertionError("admitted past the bound")
    assert (refused.value.status, refused.value.code) == (503, "overloaded")
    assert refused.value.headers == {"Retry-After": "1"}
    assert admission.in_flight == 2  # the refusal took no slot
    release.set()
    await asyncio.gather(*holders)
    async with admission.admitted("create_payment"):
        assert admission.in_flight == 1
    assert (admission.in_flight, admission.waiting) == (0, {})


def test_a_request_is_refused_while_the_oldest_in_flight_has_waited_too_long() -> None:
    admission = Admission(max_in_flight=100, max_behind_s=0.5)
    admission.waiting[0] = 10.0  # admitted at t=10 s and still waiting
    assert admission.refusal(now=10.4) is None
    assert "waited 0.6s" in (admission.refusal(now=10.6) or "")


async def test_a_request_waiting_on_a_provider_holds_a_slot_but_its_wait_is_not_lag() -> None:
    admission = Admission(max_in_flight=2, max_behind_s=0.5)
    async with admission.admitted("create_payment") as ticket:
        ticket.waits_on_others()
        assert admission.refusal(now=1e12) is None  # however long it has waited
        async with admission.admitted("create_payment"):
            assert "2 requests already in flight" in (admission.refusal(now=0.0) or "")


def test_once_behind_a_queue_longer_than_the_saga_drains_in_max_behind_s_is_refused() -> None:
    admission = Admission(max_in_flight=1000, max_behind_s=1.0)
    admission.finished.extend([9.5 + i / 100 for i in range(40)])  # 40 completed in the last second
    admission.waiting.update({i: 10.0 for i in range(41)})  # 41 waiting since t=10 s
    assert admission.refusal(now=10.2) is None  # not behind yet: a burst is let in
    assert "41 requests wait, 40 complete in 1s" in (admission.refusal(now=10.3) or "")
    del admission.waiting[0]
    assert admission.refusal(now=10.3) is None  # 40 waiting drain within the second
    admission.finished.clear()  # a quiet second: the rate reads 0, a short queue is still let in
    assert admission.refusal(now=10.3) is not None
    admission.waiting = {i: 10.0 for i in range(MIN_QUEUE)}
    assert admission.refusal(now=10.3) is None


async def test_a_refused_body_does_not_count_as_the_saga_completing() -> None:
    admission = Admission(max_in_flight=10, max_behind_s=1.0)
    with pytest.raises(ApiError):
        async with admission.admitted("create_payment"):
            raise ApiError(422, "invalid_amount", "no", "amount")
    async with admission.admitted("create_payment"):
        pass
    assert (admission.in_flight, admission.waiting, len(admission.finished)) == (0, {}, 1)
