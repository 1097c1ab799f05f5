"""The wallet's saga step: decide a movement (or an opening) against the wallet's state,
record the decision in the tables, make it durable, publish the outcome.

Everything the step touches is passed in (see `streams.wallet_worker.bootstrap`), so a unit
test builds it with a dict for each table and a list for what it sends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.topics import (
    WALLET_BALANCE_UPDATE,
    WALLET_MOVEMENT_REQUIRED,
    WALLET_MOVEMENT_UPDATES,
    WALLET_PAYMENT_OPERATIONS,
)
from domain import wallet as domain
from domain.money_sources import payment_debit_id
from domain.payment import operation_from_movement
from streams.envelope import actor_of, money, now_ms, to_record
from streams.ports import Durable, Sender, Table

log = logging.getLogger(__name__)

OUTPUT_TOPIC = {
    "MovementUpdated": WALLET_MOVEMENT_UPDATES.name,
    "WalletOpened": WALLET_MOVEMENT_UPDATES.name,
    "BalanceUpdated": WALLET_BALANCE_UPDATE.name,
    # A payment's movement answered to the payment (keyed by it): see `answer_payment`.
    "PaymentOperationCompleted": WALLET_PAYMENT_OPERATIONS.name,
}


@dataclass
class WalletSteps:
    wallets: Table
    movements: Table
    send: Sender
    durable: Durable
    now: Callable[[], int] = now_ms

    def load_wallet(self, wallet_id: str) -> domain.Wallet | None:
        raw = self.wallets.get(wallet_id)
        return domain.Wallet(**raw) if raw else None

    def load_movement(self, movement_id: str) -> domain.MovementRecord | None:
        raw = self.movements.get(movement_id)
        return domain.MovementRecord(**raw) if raw else None

    async def process_movement(self, event: dict[str, Any]) -> None:
        """A MovementRequired or WalletOpenRequested command: decide, record, publish the outcome."""
        envelope = event["envelope"]
        wallet = self.load_wallet(event["wallet_id"])
        if envelope["event_type"] == "WalletOpenRequested":
            command = domain.OpenWallet(
                envelope["event_id"],
                event["wallet_id"],
                event["user_id"],
                event["currency"],
                event["opening_balance"],
                envelope["correlation_id"],
                actor_of(envelope),
            )
            decision = domain.open_wallet(wallet, self.load_movement, command, self.now())
        elif envelope["event_type"] == "MovementRequired":
            movement = domain.RequireMovement(
                envelope["event_id"],
                event["movement_id"],
                event["wallet_id"],
                event["type"],
                money(event["amount"]),
                envelope["correlation_id"],
                event["reference"],
                event["description"],
                event["reverts_movement_id"],
                event["payment_id"],
                actor_of(envelope),
            )
            decision = domain.decide_movement(wallet, self.load_movement, movement, self.now())
        else:
            raise ValueError(f"unexpected event type {envelope['event_type']} on {WALLET_MOVEMENT_REQUIRED.name}")
        if decision.records or decision.wallet is not None:
            await self._record(decision)
        else:
            await self._rewrite(event)
        await self._publish(decision, event["wallet_id"].encode())

    async def _rewrite(self, event: dict[str, Any]) -> None:
        """A command whose effect the tables already hold (a redelivery) writes that state again:
        its movement record, the records it changed (the movement it reverts, the payment debit
        it gives money back to) and the wallet. The local store (RocksDB) takes a write before
        its changelog record is acknowledged, so a SIGKILL in between leaves the store ahead of
        the changelog; only the redelivered command, which finds its decision there, can bring
        the changelog level with it."""
        wallet_id = event["wallet_id"]
        movement_ids = [event.get("movement_id") or domain.opening_movement_id(wallet_id)]
        if event.get("reverts_movement_id"):
            movement_ids.append(event["reverts_movement_id"])
        if event.get("payment_id") and event.get("type") == "income":
            movement_ids.append(payment_debit_id(event["payment_id"]))
        rows = [(self.movements, key, self.movements.get(key)) for key in movement_ids]
        rows.append((self.wallets, wallet_id, self.wallets.get(wallet_id)))  # after the records (WrittenLast)
        present = [(table, key, row) for table, key, row in rows if row]
        for table, key, row in present:
            table[key] = row
        if present:
            await self.durable()

    async def _record(self, decision: domain.Decision) -> None:
        # The wallet is durable only after its movement records (the worker gives this step a
        # `streams.durability.WrittenLast` wallets table): if a crash keeps the records but loses
        # the wallet write, the redelivered command restores the wallet from them (domain.wallet).
        # The other way round, a wallet ahead of its records, would decide the command again.
        # Both are flat records of immutable values: a copy of their fields is what asdict would
        # give, without its recursive deep copy (a fifth of a step's CPU in the payment's case).
        for record in decision.records:
            self.movements[record.movement_id] = dict(vars(record))
        if decision.wallet is not None:
            self.wallets[decision.wallet.wallet_id] = dict(vars(decision.wallet))
        await self.durable()

    async def _publish(self, decision: domain.Decision, key: bytes) -> None:
        """The outcome as decided: the domain has stamped it with the actor of the command."""
        for outcome in decision.events:
            if isinstance(outcome, domain.MovementUpdated) and outcome.status == "rejected":
                log.info("movement %s rejected: %s", outcome.movement_id, outcome.reason_code)
        for outcome in decision.events:
            published = to_record(outcome)
            await self.send(OUTPUT_TOPIC[published["envelope"]["event_type"]], key, published)
            if isinstance(outcome, domain.MovementUpdated) and outcome.payment_id:
                await self.answer_payment(outcome)

    async def answer_payment(self, outcome: domain.MovementUpdated) -> None:
        """A payment's movement outcome, also as its payment operation keyed by the payment, so
        the payment worker decides on it where it lands instead of re-keying it through a hop."""
        assert outcome.payment_id is not None
        operation = operation_from_movement(
            outcome.meta,
            outcome.payment_id,
            outcome.movement_id,
            outcome.type,
            outcome.amount,
            outcome.status == "applied",
            outcome.reason_code,
            outcome.reason,
        )
        await self.send(OUTPUT_TOPIC["PaymentOperationCompleted"], outcome.payment_id.encode(), to_record(operation))
