"""The wallet aggregate: balances and immutable movements.

State is two kinds of record, both owned by the wallet's partition (a single
writer, so no locks): the wallet itself and one record per movement id seen.
The movement record is how redelivery stays harmless: a movement id that was
already decided re-emits the same outcome, byte for byte, instead of deciding
again. Money enters only from a named, allowed source (domain.money_sources).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from domain import money_sources as sources
from domain.access import Principal, may_debit
from domain.events import EventMeta
from domain.ids import derive_id
from domain.money import Money
from domain.wallet_model import (
    BalanceUpdated,
    Decision,
    MovementLookup,
    MovementRecord,
    MovementType,
    MovementUpdated,
    OpenWallet,
    RequireMovement,
    Wallet,
    WalletEvent,
    WalletOpened,
)

__all__ = [
    "OPPOSITE",
    "PAYMENT_MOVEMENT",
    "BalanceUpdated",
    "Decision",
    "MovementLookup",
    "MovementRecord",
    "MovementType",
    "MovementUpdated",
    "OpenWallet",
    "RequireMovement",
    "Wallet",
    "WalletEvent",
    "WalletOpened",
    "decide_movement",
    "open_wallet",
    "opening_movement_id",
    "outcome_events",
    "revert_movement_id",
]

OPPOSITE: dict[str, MovementType] = {"income": "expense", "expense": "income"}
# A manual revert of a movement that a payment's saga made (its debit, refunds, compensation).
PAYMENT_MOVEMENT = "payment_movement"


def opening_movement_id(wallet_id: str) -> str:
    return derive_id("opening-movement", wallet_id)


def revert_movement_id(movement_id: str, request_key: str) -> str:
    return derive_id("revert", movement_id, request_key)


# ---------------------------------------------------------------- decisions


def open_wallet(wallet: Wallet | None, lookup: MovementLookup, command: OpenWallet, now: int) -> Decision:
    return _acting_for(_open_wallet(wallet, lookup, command, now), command.actor)


def decide_movement(wallet: Wallet | None, lookup: MovementLookup, command: RequireMovement, now: int) -> Decision:
    return _acting_for(_decide_movement(wallet, lookup, command, now), command.actor)


def _acting_for(decision: Decision, actor: Principal | None) -> Decision:
    """Every event a command decides (or re-emits) acts for whoever gave the command."""
    subject, roles = (None, ()) if actor is None else (actor.subject, tuple(sorted(actor.roles)))
    events = tuple(replace(e, meta=replace(e.meta, actor_subject=subject, actor_roles=roles)) for e in decision.events)
    return replace(decision, events=events)


def _open_wallet(wallet: Wallet | None, lookup: MovementLookup, command: OpenWallet, now: int) -> Decision:
    if wallet is not None:
        if (wallet.user_id, wallet.currency) == (command.user_id, command.currency):
            opening = lookup(opening_movement_id(wallet.wallet_id))
            replayed = outcome_events(opening, wallet) if opening else ()
            return Decision(None, (), (_opened(wallet, command, now), *replayed))
        rejected = _open_rejected(
            command, now, "wallet_exists", "a wallet with this id exists for another user or currency"
        )
        return Decision(None, (), (rejected,))
    refusal = (
        sources.missing_actor()
        if command.actor is None
        else sources.opening_refusal(command.actor, command.opening_balance)
    )
    if refusal is not None:
        return Decision(None, (), (_open_rejected(command, now, *refusal),))
    fresh = Wallet(command.wallet_id, command.user_id, command.currency, balance=0, version=0)
    opened = _opened(fresh, command, now)
    if command.opening_balance <= 0:
        meta = EventMeta(
            derive_id("BalanceUpdated", fresh.wallet_id, "0"), now, command.correlation_id, command.command_id
        )
        balance = BalanceUpdated(meta, fresh.wallet_id, fresh.user_id, Money(0, fresh.currency), 0, None)
        return Decision(fresh, (), (opened, balance))
    deposit = RequireMovement(
        command.command_id,
        opening_movement_id(fresh.wallet_id),
        fresh.wallet_id,
        "income",
        Money(command.opening_balance, fresh.currency),
        command.correlation_id,
        reference="opening balance",
        actor=command.actor,
        opening=True,
    )
    applied = decide_movement(fresh, lookup, deposit, now)
    return Decision(applied.wallet, applied.records, (opened, *applied.events))


def _open_rejected(command: OpenWallet, now: int, code: str, reason: str) -> WalletOpened:
    meta = EventMeta(
        derive_id("WalletOpened", command.wallet_id, "rejected", command.command_id),
        now,
        command.correlation_id,
        command.command_id,
    )
    return WalletOpened(meta, command.wallet_id, command.user_id, command.currency, "rejected", code, reason)


def _opened(wallet: Wallet, command: OpenWallet, now: int) -> WalletOpened:
    meta = EventMeta(derive_id("WalletOpened", wallet.wallet_id), now, command.correlation_id, command.command_id)
    return WalletOpened(meta, wallet.wallet_id, wallet.user_id, wallet.currency, "applied", None, None)


def _decide_movement(wallet: Wallet | None, lookup: MovementLookup, command: RequireMovement, now: int) -> Decision:
    seen = lookup(command.movement_id)
    if seen is not None:
        return _redelivered(wallet, seen, command, now)
    rejection = _rejection(wallet, lookup, command)
    if rejection is not None:
        code, reason = rejection
        current = wallet or Wallet(command.wallet_id, "", command.amount.currency, 0, 0)
        record = _record(command, current, "rejected", code, reason, now)
        return Decision(None, (record,), outcome_events(record, None))
    assert wallet is not None
    delta = command.amount.amount if command.type == "income" else -command.amount.amount
    updated = replace(wallet, balance=wallet.balance + delta, version=wallet.version + 1)
    record = _record(command, updated, "applied", None, None, now)
    touched: dict[str, MovementRecord] = {}
    if command.reverts_movement_id:
        original = lookup(command.reverts_movement_id)
        assert original is not None
        touched[original.movement_id] = replace(original, reverted_by=command.movement_id)
    debit = _payment_debit(lookup, command)
    if debit is not None:
        debit = touched.get(debit.movement_id, debit)
        touched[debit.movement_id] = replace(debit, returned=debit.returned + command.amount.amount)
    return Decision(updated, (record, *touched.values()), outcome_events(record, updated))


def _payment_debit(lookup: MovementLookup, command: RequireMovement) -> MovementRecord | None:
    """The debit a payment's income gives back (None for any other movement)."""
    if command.type != "income" or command.payment_id is None:
        return None
    return lookup(sources.payment_debit_id(command.payment_id))


def _redelivered(wallet: Wallet | None, seen: MovementRecord, command: RequireMovement, now: int) -> Decision:
    same = (seen.wallet_id, seen.type, seen.amount, seen.currency, seen.reverts_movement_id) == (
        command.wallet_id,
        command.type,
        command.amount.amount,
        command.amount.currency,
        command.reverts_movement_id,
    )
    if not same:
        meta = EventMeta(
            derive_id("MovementUpdated", command.movement_id, "conflict", command.command_id),
            now,
            command.correlation_id,
            command.command_id,
        )
        conflict = MovementUpdated(
            meta,
            command.movement_id,
            command.wallet_id,
            command.type,
            command.amount,
            "rejected",
            "idempotency_conflict",
            "this movement id was already used for a different movement",
            seen.balance_after,
            seen.wallet_version,
            command.reverts_movement_id,
            command.reference,
            command.description,
            command.payment_id,
        )
        return Decision(None, (), (conflict,))
    # The movement record is written before the wallet; if only the record survived a
    # crash, the wallet is behind it and is brought forward from the record.
    behind = wallet is not None and seen.status == "applied" and seen.wallet_version > wallet.version
    restored = replace(wallet, balance=seen.balance_after, version=seen.wallet_version) if behind and wallet else None
    return Decision(restored, (), outcome_events(seen, restored or wallet))


def _rejection(wallet: Wallet | None, lookup: MovementLookup, command: RequireMovement) -> tuple[str, str] | None:
    if command.amount.amount <= 0:
        return "invalid_amount", "amount must be a positive number of minor units"
    if wallet is None:
        return "wallet_not_found", f"wallet {command.wallet_id} does not exist"
    if command.actor is None:
        return sources.missing_actor()
    if not may_debit(command.actor, wallet.user_id, command.payment_id):
        # Checked here too, not only at the API: a command that reached the topic some
        # other way must not spend a wallet its actor does not own.
        return "actor_not_allowed", f"{sources.describe(command.actor)} may not move money in this wallet"
    if command.amount.currency != wallet.currency:
        return "currency_mismatch", f"wallet currency is {wallet.currency}, movement is in {command.amount.currency}"
    if command.reverts_movement_id:
        original = lookup(command.reverts_movement_id)
        if original is None or original.wallet_id != wallet.wallet_id:
            return "movement_not_found", f"movement {command.reverts_movement_id} not found in this wallet"
        if original.payment_id is not None and command.payment_id != original.payment_id:
            # The payment would never hear of a manual revert, so its refunds could pay the
            # same money back a second time: only the payment's own saga moves it back.
            return PAYMENT_MOVEMENT, (
                f"movement {original.movement_id} belongs to payment {original.payment_id}; "
                f"refund the payment instead (POST /api/v1/payments/{original.payment_id}/refund)"
            )
        if original.status != "applied":
            return "movement_not_applied", "only an applied movement can be reverted"
        if original.reverted_by is not None:
            return "already_reverted", f"movement was already reverted by {original.reverted_by}"
        if original.reverts_movement_id is not None:
            return "not_revertible", "a revert cannot itself be reverted"
        if command.type != OPPOSITE[original.type] or command.amount.amount != original.amount:
            return "revert_mismatch", "a revert is the opposite type and the same amount as the original"
    source = _source(command)
    if source is not None:
        refusal = sources.income_refusal(
            source,
            command.actor,
            wallet.user_id,
            wallet.wallet_id,
            command.payment_id,
            command.amount.amount,
            _payment_debit(lookup, command),
        )
        if refusal is not None:
            return refusal
    if command.type == "expense" and command.amount.amount > wallet.balance:
        return "insufficient_funds", (
            f"balance {wallet.balance} is less than {command.amount.amount} {wallet.currency} (minor units)"
        )
    return None


def _record(
    command: RequireMovement,
    wallet: Wallet,
    status: Literal["applied", "rejected"],
    code: str | None,
    reason: str | None,
    now: int,
) -> MovementRecord:
    return MovementRecord(
        command.movement_id,
        command.wallet_id,
        command.type,
        command.amount.amount,
        command.amount.currency,
        status,
        code,
        reason,
        wallet.balance,
        wallet.version,
        command.reverts_movement_id,
        command.reference,
        command.description,
        command.payment_id,
        now,
        command.correlation_id,
        command.command_id,
        source=_source(command),
    )


def _source(command: RequireMovement) -> str | None:
    if command.type != "income":
        return None
    return sources.income_source(command.movement_id, command.payment_id, command.opening)


def outcome_events(record: MovementRecord, wallet: Wallet | None) -> tuple[WalletEvent, ...]:
    """The events a decided movement publishes; the same record always gives the same events."""
    meta = EventMeta(
        derive_id("MovementUpdated", record.movement_id), record.recorded_at, record.correlation_id, record.causation_id
    )
    updated = MovementUpdated(
        meta,
        record.movement_id,
        record.wallet_id,
        record.type,
        Money(record.amount, record.currency),
        record.status,
        record.reason_code,
        record.reason,
        record.balance_after,
        record.wallet_version,
        record.reverts_movement_id,
        record.reference,
        record.description,
        record.payment_id,
        record.source,
    )
    if record.status != "applied" or wallet is None:
        return (updated,)
    balance_meta = EventMeta(
        derive_id("BalanceUpdated", record.wallet_id, str(record.wallet_version)),
        record.recorded_at,
        record.correlation_id,
        record.causation_id,
    )
    balance = BalanceUpdated(
        balance_meta,
        record.wallet_id,
        wallet.user_id,
        Money(record.balance_after, record.currency),
        record.wallet_version,
        record.movement_id,
    )
    return updated, balance
