"""The money auditor resumes from its checkpoint instead of re-reading the log: after a SIGTERM
(which writes a checkpoint) and after a SIGKILL (which resumes from the last one written), it
starts from non-zero offsets, still lists the violation found before, and finds one planted
after the restart."""

from __future__ import annotations

import signal
from functools import partial
from typing import Any

from connectors.config import Config
from devtools.devctl import Supervisor
from tests.conftest import ensure_running
from tests.integration.conftest import MoneyWitness
from tests.integration.test_payment_service import new_wallet, wallet_payment
from tests.support import Api, eventually
from tests.support.audit import auditor_get, end_offsets, forge_full_refund


async def paid(payment_api: Api, wallet_api: Api, amount: int) -> str:
    wallet_id, user_id = await new_wallet(wallet_api, amount)
    status, payment = await payment_api.post("/api/v1/payments", wallet_payment(user_id, wallet_id, amount))
    assert status == 201 and payment["status"] == "completed", payment
    return str(payment["id"])


async def reported(config: Config, payment_id: str) -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]] | None:
        return [v for v in await auditor_get(config, "/violations") if v["subject"] == payment_id] or None

    return await eventually(found, timeout=30, what=f"the auditor to report payment {payment_id}")


async def has_read(config: Config, log_end: dict[str, int]) -> bool:
    positions = (await auditor_get(config, "/status"))["positions"]
    return all(positions.get(tp, 0) >= end for tp, end in log_end.items())


async def ready_status(config: Config) -> dict[str, Any]:
    async def ready() -> dict[str, Any] | None:
        try:
            status: dict[str, Any] = await auditor_get(config, "/status")
        except OSError:
            return None  # still starting
        return status if status["caught_up"] else None

    return await eventually(ready, timeout=60, what="the auditor to catch up after its restart")


async def test_the_auditor_resumes_from_its_checkpoint_after_sigterm_and_after_sigkill(
    config: Config, supervisor: Supervisor, money_witness: MoneyWitness, payment_api: Api, wallet_api: Api
) -> None:
    before = await paid(payment_api, wallet_api, 3_000)
    money_witness.planted.add(before)
    where_before = await forge_full_refund(config, before, 3_000)
    assert [(v["at"], v["cleared"]) for v in await reported(config, before)] == [(where_before, False)]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        log_end = await end_offsets(config)
        await eventually(partial(has_read, config, log_end), what="the auditor to read up to the log end")
        # SIGKILL: it resumes from the checkpoint the SIGTERM wrote, or a later periodic one.
        supervisor.stop("auditor", sig=sig)
        ensure_running(config, supervisor, "auditor")
        status = await ready_status(config)
        started = status["started_from"]
        assert started["checkpoint_written_at"] is not None, started
        assert started["messages_skipped"] > 0, started
        if sig == signal.SIGTERM:  # a clean stop checkpoints where it stood: nothing is read twice
            assert all(started["offsets"].get(tp, 0) >= end for tp, end in log_end.items() if end), started
        ready = await auditor_get(config, "/ready")
        assert ready["status"] == "ready", ready

        # Found before the restart: still listed, open, once.
        assert [(v["at"], v["cleared"]) for v in await reported(config, before)] == [(where_before, False)]
        # Planted after the restart: found, including the payment it judged and stored before.
        after = await paid(payment_api, wallet_api, 2_000)
        money_witness.planted.add(after)
        where_after = await forge_full_refund(config, after, 2_000)
        found = await reported(config, after)
        assert [(v["invariant"], v["at"], v["cleared"]) for v in found] == [
            ("payment_matches_movements", where_after, False)
        ], found
