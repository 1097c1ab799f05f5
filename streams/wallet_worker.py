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
from connectors.tracing import outgoing_headers
from domain import wallet as domain
from streams.app import make_app
from streams.envelope import money, now_ms, to_record
from streams.pages import add_worker_pages
from streams.processing import Processor, SourceMessage
from streams.topics import WALLET_BALANCE_UPDATE, WALLET_MOVEMENT_REQUIRED, WALLET_MOVEMENT_UPDATES

log = logging.getLogger(__name__)

config = load_config()
codec = make_codec(config.kafka.schema_registry_url or None)
app = make_app("wallet-worker", config, config.wallet_worker.web_port, config.wallet_worker.store)

wallets = app.Table("wallets", default=None, partitions=config.kafka.partitions)
movements = app.Table("movements", default=None, partitions=config.kafka.partitions)

commands_topic = app.topic(
    WALLET_MOVEMENT_REQUIRED.name, key_serializer="raw", value_serializer="raw", partitions=config.kafka.partitions
)
OUTPUT_TOPIC = {
    "MovementUpdated": WALLET_MOVEMENT_UPDATES.name,
    "WalletOpened": WALLET_MOVEMENT_UPDATES.name,
    "BalanceUpdated": WALLET_BALANCE_UPDATE.name,
}


async def send(topic: str, key: bytes | None, record: dict[str, Any]) -> None:
    # force=True: publish now, not at the next commit; the commit flushes the producer
    # before it moves the offset, so this stays at least once.
    await app.topic(topic, key_serializer="raw", value_serializer="raw").send(
        key=key, value=codec.encode(record), headers=outgoing_headers(), force=True
    )


processor = Processor(
    "wallet-worker", codec.decode, send, config.processing.max_attempts, config.processing.retry_backoff_s
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
    key = event["wallet_id"].encode()
    for outcome in decision.events:
        published = to_record(outcome)
        await send(OUTPUT_TOPIC[published["envelope"]["event_type"]], key, published)


@app.agent(commands_topic, concurrency=1)  # one writer per wallet partition; see faust #606
async def process_movement(stream: faust.StreamT) -> None:
    async for event in stream.events():
        message = event.message
        await processor.process(
            SourceMessage(
                message.topic, message.partition, message.offset, message.key, message.value, message.headers
            ),
            handle_command,
        )


add_worker_pages(app)


@app.page("/wallets/{wallet_id}/")
@app.table_route(table=wallets, match_info="wallet_id")
async def wallet_state(web: Any, request: Any, wallet_id: str) -> Any:
    """The wallet's live table state, answered by the worker that owns its partition."""
    state = wallets.get(wallet_id)
    if state is None:
        return web.json(
            {"error": {"code": "not_found", "message": f"wallet {wallet_id} not in table", "field": "wallet_id"}},
            status=404,
        )
    return web.json(state)


if __name__ == "__main__":
    app.main()
