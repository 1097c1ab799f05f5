"""The wallet worker: the single writer of every wallet in its partitions.

`wallet.movement_required` in (movement and open-wallet commands, keyed by wallet
id); `wallet.movement_updates` and `wallet.balance_update` out. State lives in two
faust tables (wallets, movements) recovered from their changelogs on restart.
`bootstrap` wires it; importing this module does nothing.

    python -m streams.wallet_worker worker -l info
"""

from __future__ import annotations

from connectors.avro import make_codec
from connectors.config import Config, load_config
from connectors.topics import (
    MOVEMENTS_CHANGELOG,
    PAYMENT_DLQ,
    WALLET_BALANCE_UPDATE,
    WALLET_MOVEMENT_REQUIRED,
    WALLET_MOVEMENT_UPDATES,
    WALLET_WORKER,
    WALLETS_CHANGELOG,
)
from domain.access import Action
from streams.app import Worker, add_agent, make_app, make_pipeline, make_sender, raw_topic
from streams.durability import WrittenLast
from streams.pages import add_worker_pages
from streams.state_page import add_state_page
from streams.table_codec import with_orjson_values
from streams.wallet_steps import WalletSteps


def bootstrap(config: Config | None = None) -> Worker[WalletSteps]:
    config = config or load_config()
    codec = make_codec(config.kafka.schema_registry_url or None)
    app = make_app(WALLET_WORKER, config, config.wallet_worker.web_port, config.wallet_worker.store)
    wallets = with_orjson_values(app.Table("wallets", default=None, partitions=config.kafka.partitions))
    movements = with_orjson_values(app.Table("movements", default=None, partitions=config.kafka.partitions))
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
    # A wallet's new version reaches its changelog only after the movement records that explain
    # it: a crash then leaves the wallet behind its records (repaired on redelivery), never ahead.
    steps = WalletSteps(WrittenLast(wallets), movements, send, pipeline.durable)
    commands = raw_topic(app, WALLET_MOVEMENT_REQUIRED.name, config.kafka.partitions)

    add_agent(app, pipeline, commands, steps.process_movement, __name__)
    add_worker_pages(app, pipeline.processor, pipeline.guard, config.processing.stall_after_s)
    add_state_page(app, config, "/wallets", commands, wallets, "wallet_id", Action.READ_WALLET)
    return Worker(app, steps, pipeline)


if __name__ == "__main__":
    bootstrap().app.main()
