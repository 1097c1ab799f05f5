"""The wallet worker: the single writer of every wallet in its partitions.

`wallet.movement_required` in (movement and open-wallet commands, keyed by wallet
id); `wallet.movement_updates` and `wallet.balance_update` out. State lives in two
faust tables (wallets, movements) recovered from their changelogs on restart.

    python -m streams.wallet_worker worker -l info
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import faust

from connectors.avro import make_codec
from connectors.config import load_config
from connectors.topics import (
    MOVEMENTS_CHANGELOG,
    PAYMENT_DLQ,
    WALLET_BALANCE_UPDATE,
    WALLET_MOVEMENT_REQUIRED,
    WALLET_MOVEMENT_UPDATES,
    WALLET_WORKER,
    WALLETS_CHANGELOG,
)
from domain import wallet as domain
from domain.access import Action
from streams.app import durable, make_app, make_pipeline, make_sender, raw_topic
from streams.envelope import actor_of, money, now_ms, to_record
from streams.pages import add_worker_pages
from streams.state_page import add_state_page

log = logging.getLogger(__name__)

config = load_config()
codec = make_codec(config.kafka.schema_registry_url or None)
app = make_app(WALLET_WORKER, config, config.wallet_worker.web_port, config.wallet_worker.store)

wallets = app.Table("wallets", default=None, partitions=config.kafka.partitions)
movements = app.Table("movements", default=None, partitions=config.kafka.partitions)

commands_topic = raw_topic(app, WALLET_MOVEMENT_REQUIRED.name, config.kafka.partitions)
OUTPUT_TOPIC = {
    "MovementUpdated": WALLET_MOVEMENT_UPDATES.name,
    "WalletOpened": WALLET_MOVEMENT_UPDATES.name,
    "BalanceUpdated": WALLET_BALANCE_UPDATE.name,
}
send = make_sender(app, codec)
pipeline = make_pipeline(
    app,
    config,
    codec,
    send,
    [
        WALLET_MOVEMENT_REQUIRED,
        WALLET_MOVEMENT_UPDATES,
        WALLET_BALANCE_UPDATE,
        PAYMENT_DLQ,
        WALLETS_CHANGELOG,
        MOVEMENTS_CHANGELOG,
    ],
)


def load_wallet(wallet_id: str) -> domain.Wallet | None:
    raw = wallets.get(wallet_id)
    return domain.Wallet(**raw) if raw else None


def load_movement(movement_id: str) -> domain.MovementRecord | None:
    raw = movements.get(movement_id)
    return domain.MovementRecord(**raw) if raw else None


async def handle_command(event: dict[str, Any]) -> None:
    envelope = event["envelope"]
    wallet = load_wallet(event["wallet_id"])
    if envelope["event_type"] == "WalletOpenRequested":
        command = domain.OpenWallet(
            envelope["event_id"],
            event["wallet_id"],
            event["user_id"],
            event["currency"],
            event["opening_balance"],
            envelope["correlation_id"],
        )
        decision = domain.open_wallet(wallet, load_movement, command, now_ms())
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
        decision = domain.decide_movement(wallet, load_movement, movement, now_ms())
    else:
        raise ValueError(f"unexpected event type {envelope['event_type']} on {WALLET_MOVEMENT_REQUIRED.name}")
    # Movement records first: if a crash keeps them but loses the wallet write, the
    # redelivered command restores the wallet from the record (see domain.wallet).
    for record in decision.records:
        movements[record.movement_id] = dataclasses.asdict(record)
    if decision.wallet is not None:
        wallets[decision.wallet.wallet_id] = dataclasses.asdict(decision.wallet)
    if decision.records or decision.wallet is not None:
        await durable(app)
    for outcome in decision.events:
        if isinstance(outcome, domain.MovementUpdated) and outcome.status == "rejected":
            log.info("movement %s rejected: %s", outcome.movement_id, outcome.reason_code)
    key = event["wallet_id"].encode()
    for outcome in decision.events:
        published = to_record(outcome)
        # The outcome acts for whoever gave the command.
        published["envelope"]["actor_subject"] = envelope.get("actor_subject")
        published["envelope"]["actor_roles"] = list(envelope.get("actor_roles") or ())
        await send(OUTPUT_TOPIC[published["envelope"]["event_type"]], key, published)


@app.agent(commands_topic, concurrency=1)  # one writer per wallet partition; see faust #606
async def process_movement(stream: faust.StreamT) -> None:
    await pipeline.consume(stream, handle_command)


add_worker_pages(app, pipeline.processor, pipeline.guard, config.processing.stall_after_s)
add_state_page(app, config, "/wallets", commands_topic, wallets, "wallet_id", Action.READ_WALLET)


if __name__ == "__main__":
    app.main()
