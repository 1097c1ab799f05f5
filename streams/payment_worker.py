"""The payment worker: every step of the payment saga, one agent each (see
`streams.payment_steps`), a deadline sweep, readiness, metrics and the payment state page.
`bootstrap` wires it; importing this module does nothing.

    python -m streams.payment_worker worker -l info
"""

from __future__ import annotations

import time

from connectors.avro import make_codec
from connectors.config import Config, load_config
from connectors.providers import make_providers
from connectors.topics import (
    EXTERNAL_PROVIDER_EVENTS,
    OPEN_PAYMENTS_CHANGELOG,
    PAYMENT_CREATED,
    PAYMENT_DLQ,
    PAYMENT_FAILED,
    PAYMENT_OPERATION_COMPLETED,
    PAYMENT_OPERATION_INCONSISTENT,
    PAYMENT_REFUND_FAILED,
    PAYMENT_REFUND_REQUESTED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCEEDED,
    PAYMENT_WORKER,
    PAYMENTS_CHANGELOG,
    WALLET_MOVEMENT_REQUIRED,
    WALLET_PAYMENT_OPERATIONS,
    TopicSpec,
)
from domain.access import Action
from streams.app import Worker, add_agent, make_app, make_pipeline, make_sender, raw_topic
from streams.pages import add_worker_pages
from streams.payment_deadlines import DeadlineIndex
from streams.payment_steps import PaymentSteps
from streams.processing import Handler
from streams.state_page import add_state_page
from streams.table_codec import with_orjson_values

SOURCES = (
    PAYMENT_CREATED,
    WALLET_PAYMENT_OPERATIONS,
    EXTERNAL_PROVIDER_EVENTS,
    PAYMENT_OPERATION_COMPLETED,
    PAYMENT_OPERATION_INCONSISTENT,
    PAYMENT_REFUND_REQUESTED,
)
OUTPUTS = (
    PAYMENT_SUCCEEDED,
    PAYMENT_FAILED,
    PAYMENT_REFUNDED,
    PAYMENT_REFUND_FAILED,
    WALLET_MOVEMENT_REQUIRED,
    PAYMENT_DLQ,
)


def step_of(steps: PaymentSteps) -> dict[TopicSpec, Handler]:
    """The step each source topic feeds (the history loader drives the same map in process)."""
    steps_by_source: dict[TopicSpec, Handler] = {
        PAYMENT_CREATED: steps.process_payment_method,
        WALLET_PAYMENT_OPERATIONS: steps.process_wallet_operation,
        EXTERNAL_PROVIDER_EVENTS: steps.process_provider_update,
        PAYMENT_OPERATION_COMPLETED: steps.process_payment_operation_result,
        PAYMENT_OPERATION_INCONSISTENT: steps.compensate_inconsistent_operation,
        PAYMENT_REFUND_REQUESTED: steps.process_refund,
    }
    assert set(steps_by_source) == set(SOURCES), "every source topic has its step"
    return steps_by_source


def bootstrap(config: Config | None = None) -> Worker[PaymentSteps]:
    config = config or load_config()
    codec = make_codec(config.kafka.schema_registry_url or None)
    app = make_app(PAYMENT_WORKER, config, config.payment_worker.web_port, config.payment_worker.store)
    payments = with_orjson_values(app.Table("payments", default=None, partitions=config.kafka.partitions))
    open_payments = with_orjson_values(app.Table("open_payments", default=None, partitions=config.kafka.partitions))
    send = make_sender(app, codec)
    providers = make_providers(config)  # by the name a payment gives; Stripe's secrets are loaded now
    pipeline = make_pipeline(
        app, config, codec, send, [*SOURCES, *OUTPUTS, PAYMENTS_CHANGELOG, OPEN_PAYMENTS_CHANGELOG]
    )
    refund_deadline_ms = int(config.provider.deadline_s * 1000)
    steps = PaymentSteps(payments, send, pipeline.durable, providers, refund_deadline_ms, DeadlineIndex(open_payments))
    # Concurrency 1 everywhere: one writer per payment partition, and faust #606 with more.
    for spec, step in step_of(steps).items():
        add_agent(app, pipeline, raw_topic(app, spec.name, config.kafka.partitions), step, __name__)

    @app.timer(interval=1.0)
    async def enforce_deadlines() -> None:
        await steps.enforce_deadlines(app.rebalancing, time.monotonic())

    add_worker_pages(app, pipeline.processor, pipeline.guard, config.processing.stall_after_s)
    # The provider token is the payer's card stand-in: it goes to the provider and nowhere else.
    add_state_page(
        app,
        config,
        "/payments",
        raw_topic(app, PAYMENT_CREATED.name, config.kafka.partitions),
        payments,
        "payment_id",
        Action.READ_PAYMENT,
        hidden=frozenset({"provider_token"}),
    )
    return Worker(app, steps, pipeline)


if __name__ == "__main__":
    bootstrap().app.main()
