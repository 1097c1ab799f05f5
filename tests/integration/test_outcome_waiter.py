"""The APIs' outcome waiter stops reading while nobody waits, and still sees every outcome
registered for (on the real broker)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from connectors.config import Config
from connectors.kafka_io import OutcomeWaiter
from connectors.topics import WALLET_MOVEMENT_REQUIRED
from streams.envelope import command_record, new_meta
from tests.integration.kafka_helpers import codec, publish
from tests.support.actors import TEST_OPERATOR
from tests.support.kafka import reader

TOPIC = WALLET_MOVEMENT_REQUIRED.name


def opening(wallet_id: str) -> dict[str, Any]:
    # An empty wallet: nothing of the suite's money moves whether a worker handles it or not.
    return command_record(
        "WalletOpenRequested",
        new_meta(actor=TEST_OPERATOR),
        wallet_id=wallet_id,
        user_id=str(uuid.uuid4()),
        currency="USD",
        opening_balance=0,
    )


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
        await publish(config, TOPIC, while_idle, opening(while_idle))
        late = await waiter.register(while_idle)
        assert waiter.following.is_set()
        future = await waiter.register(wanted)
        await publish(config, TOPIC, wanted, opening(wanted))
        outcome = await waiter.wait(wanted, future, timeout=10)
        assert outcome is not None and outcome["wallet_id"] == wanted
        assert await waiter.wait(while_idle, late, timeout=0.5) is None
    finally:
        await waiter.stop()
