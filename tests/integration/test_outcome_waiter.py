"""The APIs' outcome waiter stops reading while nobody waits, and still sees every outcome
registered for (on the real broker)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from connectors.config import Config
from connectors.kafka_io import OutcomeWaiter
from connectors.topics import WALLET_MOVEMENT_REQUIRED
from tests.integration.kafka_helpers import codec, publish
from tests.integration.test_money_sources import opening
from tests.support.actors import TEST_OPERATOR
from tests.support.kafka import reader

TOPIC = WALLET_MOVEMENT_REQUIRED.name


def empty_wallet(wallet_id: str) -> dict[str, Any]:
    # Nothing of the suite's money moves whether a worker handles it or not.
    return opening(wallet_id, str(uuid.uuid4()), 0, TEST_OPERATOR)


async def test_an_idle_waiter_pauses_and_the_next_registration_sees_its_outcome(config: Config) -> None:
    waiter = OutcomeWaiter(reader(config), [TOPIC], codec, lambda event: [event["wallet_id"]], idle_after_s=0.3)
    await waiter.start()
    try:
        while_idle, wanted = str(uuid.uuid4()), str(uuid.uuid4())
        for _ in range(50):
            if not waiter.following.is_set():
                break
            await asyncio.sleep(0.1)
        assert not waiter.following.is_set(), "still fetching with nobody waiting"

        # Written while paused, before its registration: the tail resumes from the ends as they
        # are at the first registration, so it is behind it (had the tail gone on from where it
        # paused, this registration would resolve).
        await publish(config, TOPIC, while_idle, empty_wallet(while_idle))
        late = await waiter.register(while_idle)
        assert waiter.following.is_set()
        future = await waiter.register(wanted)
        await publish(config, TOPIC, wanted, empty_wallet(wanted))
        outcome = await waiter.wait(wanted, future, timeout=10)
        assert outcome is not None and outcome["wallet_id"] == wanted
        assert await waiter.wait(while_idle, late, timeout=0.5) is None
    finally:
        await waiter.stop()
