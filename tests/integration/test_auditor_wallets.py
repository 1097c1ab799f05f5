"""The money auditor keeps each wallet's running figures in PostgreSQL and only some wallets in
memory: after a restart a wallet it knew is not in memory, and the next payment from it reads
its figures back, so the books go on from them (the currency's figures move by exactly the
payment) instead of losing the wallet (a wallet read as new has no complete history and would
leave the figures)."""

from __future__ import annotations

import asyncio
import re
import signal
import urllib.request
from functools import partial

from connectors.config import Config
from devtools.devctl import Supervisor
from tests.conftest import ensure_running
from tests.integration.conftest import MoneyWitness
from tests.integration.test_auditor_resumes import has_read, ready_status
from tests.integration.test_payment_service import new_wallet, wallet_payment
from tests.support import Api, eventually
from tests.support.audit import auditor_get, end_offsets

FIGURE = re.compile(r'^money_ledger_minor_units\{currency="USD",kind="(\w+)"\} (\S+)$', re.M)


def _metrics(config: Config) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{config.auditor.port}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def usd_figures(config: Config) -> dict[str, int]:
    text = await asyncio.to_thread(_metrics, config)
    return {kind: int(float(value)) for kind, value in FIGURE.findall(text)}


async def pay(payment_api: Api, user_id: str, wallet_id: str, amount: int) -> None:
    status, payment = await payment_api.post("/api/v1/payments", wallet_payment(user_id, wallet_id, amount))
    assert status == 201 and payment["status"] == "completed", payment


async def test_a_wallet_not_in_memory_after_a_restart_is_read_back_and_its_figures_go_on(
    config: Config, supervisor: Supervisor, money_witness: MoneyWitness, payment_api: Api, wallet_api: Api
) -> None:
    wallet_id, user_id = await new_wallet(wallet_api, 5_000)
    await pay(payment_api, user_id, wallet_id, 2_000)
    log_end = await end_offsets(config)
    await eventually(partial(has_read, config, log_end), what="the auditor to read up to the log end")
    supervisor.stop("auditor", sig=signal.SIGTERM)  # its checkpoint writes the wallet's figures
    ensure_running(config, supervisor, "auditor")
    status = await ready_status(config)
    read_back = status["read_back"]["wallets"]  # a fresh process: every wallet it meets is read back
    await asyncio.sleep(config.auditor.quiet_s + 1)  # judged and published after the restart
    before = await usd_figures(config)

    await pay(payment_api, user_id, wallet_id, 1_000)

    async def moved() -> dict[str, int] | None:
        now = await usd_figures(config)
        return now if now != before else None

    after = await eventually(moved, timeout=30, what="the auditor's USD figures to move")
    assert after["balances"] - before["balances"] == -1_000, (before, after)
    assert after["expenses"] - before["expenses"] == 1_000, (before, after)
    assert (after["openings"], after["incomes"]) == (before["openings"], before["incomes"]), (before, after)
    status = await auditor_get(config, "/status")
    assert status["read_back"]["wallets"] > read_back, status
    assert status["open"]["balance_equals_movements"] == 0 and status["open"]["currency_totals"] == 0, status
