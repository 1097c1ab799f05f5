"""The payment worker: every step of the payment saga, one agent each.

The `payments` table (keyed by payment id) is written only by agents whose source
topic is keyed by payment id, because a table write goes to the changelog
partition of the event being processed. process_wallet_debit reads a topic keyed
by wallet id, so it only republishes, keyed by payment id.

    python -m streams.payment_worker worker -l info
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import faust

from connectors.avro import make_codec
from connectors.config import load_config
from connectors.metrics import PAYMENTS_TERMINAL, PROVIDER_MISMATCHES, REFUNDS_TERMINAL, SAGA_DURATION
from connectors.provider_client import ProviderRejected, ProviderUnavailable
from connectors.providers import make_providers
from domain import payment as domain
from domain.access import Action
from domain.events import EventMeta
from domain.ids import derive_id
from streams.app import durable, make_app, make_pipeline, make_sender, raw_topic
from streams.envelope import command_record, from_record, money, now_ms, to_record
from streams.pages import add_worker_pages
from streams.state_page import add_state_page
from streams.topics import (
    EXTERNAL_PROVIDER_EVENTS,
    PAYMENT_CREATED,
    PAYMENT_DLQ,
    PAYMENT_FAILED,
    PAYMENT_OPERATION_COMPLETED,
    PAYMENT_OPERATION_INCONSISTENT,
    PAYMENT_REFUND,
    PAYMENT_REFUND_FAILED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCESS,
    PAYMENT_WORKER,
    PAYMENTS_CHANGELOG,
    WALLET_MOVEMENT_REQUIRED,
    WALLET_MOVEMENT_UPDATES,
    TopicSpec,
)

log = logging.getLogger(__name__)

config = load_config()
codec = make_codec(config.kafka.schema_registry_url or None)
app = make_app(PAYMENT_WORKER, config, config.payment_worker.web_port, config.payment_worker.store)
providers = make_providers(config)  # by the name a payment gives

payments = app.Table("payments", default=None, partitions=config.kafka.partitions)

OUTPUT_TOPIC = {
    "PaymentSucceeded": PAYMENT_SUCCESS.name,
    "PaymentFailed": PAYMENT_FAILED.name,
    "PaymentOperationInconsistent": PAYMENT_OPERATION_INCONSISTENT.name,
    "PaymentRefunded": PAYMENT_REFUNDED.name,
    "RefundFailed": PAYMENT_REFUND_FAILED.name,
    "PaymentOperationCompleted": PAYMENT_OPERATION_COMPLETED.name,
}


class UnprocessableEvent(ValueError):
    """An event this step cannot apply; the Processor retries, then dead-letters it with this reason."""


def source(spec: TopicSpec) -> faust.TopicT:
    return raw_topic(app, spec.name, config.kafka.partitions)


send = make_sender(app, codec)

SOURCES = (
    PAYMENT_CREATED,
    WALLET_MOVEMENT_UPDATES,
    EXTERNAL_PROVIDER_EVENTS,
    PAYMENT_OPERATION_COMPLETED,
    PAYMENT_OPERATION_INCONSISTENT,
    PAYMENT_REFUND,
)
OUTPUTS = (
    PAYMENT_SUCCESS,
    PAYMENT_FAILED,
    PAYMENT_REFUNDED,
    PAYMENT_REFUND_FAILED,
    WALLET_MOVEMENT_REQUIRED,
    PAYMENT_DLQ,
)
pipeline = make_pipeline(app, config, codec, send, [*SOURCES, *OUTPUTS, PAYMENTS_CHANGELOG])


def load(payment_id: str) -> domain.Payment | None:
    raw = payments.get(payment_id)
    return domain.from_dict(raw) if raw else None


TERMINAL_STATUS = {"PaymentSucceeded": "completed", "PaymentFailed": "failed"}


async def publish(events: tuple[Any, ...]) -> None:
    for event in events:
        record = to_record(event)
        if record["envelope"]["actor_subject"] is None:
            # Events of a payment's saga act for whoever created the payment.
            payment = load(event.payment_id)
            if payment is not None and payment.actor_subject is not None:
                record["envelope"]["actor_subject"] = payment.actor_subject
                record["envelope"]["actor_roles"] = list(payment.actor_roles)
        await send(OUTPUT_TOPIC[record["envelope"]["event_type"]], event.payment_id.encode(), record)


def observe_terminal(payment: domain.Payment, events: tuple[Any, ...]) -> None:
    for event in events:
        status = TERMINAL_STATUS.get(type(event).__name__)
        if status is not None:
            log.info(
                "payment %s %s%s",
                payment.payment_id,
                status,
                f" ({getattr(event, 'reason_code', '')})" if status == "failed" else "",
            )
            PAYMENTS_TERMINAL.labels(status).inc()
            SAGA_DURATION.labels(status).observe(max(0, event.meta.occurred_at - payment.created_at) / 1000)


def observe_refunds_and_mismatches(events: tuple[Any, ...]) -> None:
    """Count refund outcomes and provider reports that differ from what was asked; log them by payment."""
    reconciled = {e.operation_id for e in events if isinstance(e, domain.PaymentOperationInconsistent)}
    for event in events:
        if isinstance(event, domain.RefundFailed):
            log.info("payment %s refund %s failed (%s)", event.payment_id, event.refund_id, event.reason_code)
            REFUNDS_TERMINAL.labels("failed", event.reason_code).inc()
        elif isinstance(event, domain.PaymentRefunded):
            late = domain.refund_operation_id(event.refund_id) in reconciled
            REFUNDS_TERMINAL.labels("reconciled" if late else "succeeded", "late_success" if late else "").inc()
        elif isinstance(event, domain.PaymentOperationInconsistent) and event.expected_amount is not None:
            if event.expected_amount != event.amount:
                log.warning(
                    "payment %s: provider reported %s %s for %s %s, asked %s %s",
                    event.payment_id,
                    event.amount.amount,
                    event.amount.currency,
                    event.kind,
                    event.operation_id,
                    event.expected_amount.amount,
                    event.expected_amount.currency,
                )
                PROVIDER_MISMATCHES.labels(event.kind).inc()


async def apply(decision: domain.Decision) -> None:
    """Table first, then events, then requests: a crash in between re-emits the same ids on redelivery."""
    if decision.payment is not None:
        raw = domain.to_dict(decision.payment)
        payments[decision.payment.payment_id] = raw
        deadlines.track(decision.payment)
        await durable(app)
    await publish(decision.events)
    if decision.payment is not None:
        observe_terminal(decision.payment, decision.events)
    if decision.payment is not None or decision.rejection is not None:  # decided now, not re-emitted
        observe_refunds_and_mismatches(decision.events)
    for effect in decision.effects:
        await perform(effect)


async def perform(effect: domain.Effect) -> None:
    if isinstance(effect, domain.WalletMovement):
        record = command_record(
            "MovementRequired",
            EventMeta(
                derive_id("MovementRequired", effect.movement_id),
                now_ms(),
                effect.payment_id,
                None,
                effect.actor_subject,
                effect.actor_roles,
            ),
            movement_id=effect.movement_id,
            wallet_id=effect.wallet_id,
            type=effect.type,
            amount=effect.amount,
            reference=f"payment {effect.payment_id}",
            description=effect.description,
            reverts_movement_id=effect.reverts_movement_id,
            payment_id=effect.payment_id,
        )
        await send(WALLET_MOVEMENT_REQUIRED.name, effect.wallet_id.encode(), record)
        return
    provider = providers.get(effect.provider)
    try:
        if provider is None:
            raise ProviderUnavailable(f"provider {effect.provider!r} is not offered by this deployment")
        if isinstance(effect, domain.ProviderCharge):
            await provider.charge(
                effect.operation_id, effect.payment_id, effect.amount.amount, effect.amount.currency, effect.token
            )
        else:
            await provider.refund(
                effect.operation_id,
                effect.payment_id,
                effect.charge_reference,
                effect.amount.amount,
                effect.amount.currency,
            )
    except ProviderRejected as exc:
        # A refusal is final: it becomes the operation's failed outcome, like a decline by webhook.
        kind = effect_kind(effect)
        meta = EventMeta(derive_id("PaymentOperationCompleted", effect.operation_id), now_ms(), effect.payment_id, None)
        failed = domain.PaymentOperationCompleted(
            meta,
            effect.payment_id,
            effect.operation_id,
            kind,
            "failed",
            effect.amount,
            "provider",
            None,
            exc.decline_code or "provider_rejected",
            str(exc)[:500],
        )
        await publish((failed,))
    except ProviderUnavailable as exc:
        if isinstance(effect, domain.ProviderCharge) or effect.deadline_at is not None:
            # The operation may or may not exist at the provider; its deadline fails it, and a
            # late success is compensated (a charge) or reconciled (a refund).
            log.warning("%s %s not confirmed by the provider: %s", effect_kind(effect), effect.operation_id, exc)
        else:
            raise


def effect_kind(effect: domain.ProviderCharge | domain.ProviderRefund) -> Literal["charge", "refund"]:
    return "charge" if isinstance(effect, domain.ProviderCharge) else "refund"


def expect(event: dict[str, Any], *types: str) -> str:
    event_type: str = event["envelope"]["event_type"]
    if event_type not in types:
        raise UnprocessableEvent(f"unexpected event type {event_type}; expected {', '.join(types)}")
    return event_type


async def handle_created(event: dict[str, Any]) -> None:
    expect(event, "PaymentCreated")
    created = from_record(domain.PaymentCreated, event)
    await apply(domain.decide_created(load(created.payment_id), created, now_ms()))


async def handle_wallet_update(event: dict[str, Any]) -> None:
    if event["envelope"]["event_type"] != "MovementUpdated" or not event["payment_id"]:
        return  # wallet openings and movements made outside a payment
    op = domain.operation_from_movement(
        meta_of(event),
        event["payment_id"],
        event["movement_id"],
        event["type"],
        money(event["amount"]),
        event["status"] == "applied",
        event["reason_code"],
        event["reason"],
    )
    await publish((op,))


def meta_of(event: dict[str, Any]) -> EventMeta:
    env = event["envelope"]
    return EventMeta(env["event_id"], env["occurred_at"], env["correlation_id"], env["causation_id"])


async def handle_provider_update(event: dict[str, Any]) -> None:
    expect(event, "ProviderUpdate")
    op = domain.operation_from_provider(
        meta_of(event),
        event["payment_id"],
        event["provider"],
        event["provider_reference"],
        event["operation_id"],
        event["kind"],
        event["status"],
        money(event["amount"]),
        event["failure_reason"],
    )
    if op is not None:
        await publish((op,))


async def handle_operation(event: dict[str, Any]) -> None:
    expect(event, "PaymentOperationCompleted")
    op = from_record(domain.PaymentOperationCompleted, event)
    decision = domain.decide_operation(load(op.payment_id), op, now_ms())
    if decision.rejection is not None:
        raise UnprocessableEvent(decision.rejection[1])
    await apply(decision)


async def handle_inconsistent(event: dict[str, Any]) -> None:
    expect(event, "PaymentOperationInconsistent")
    inconsistent = from_record(domain.PaymentOperationInconsistent, event)
    decision = domain.decide_compensation(load(inconsistent.payment_id), inconsistent)
    if decision.rejection is not None:
        log.warning("not compensating %s: %s", inconsistent.operation_id, decision.rejection[1])
    await apply(decision)


async def handle_refund(event: dict[str, Any]) -> None:
    expect(event, "RefundRequested")
    requested = from_record(domain.RefundRequested, event)
    deadline_ms = int(config.provider.deadline_s * 1000)
    decision = domain.decide_refund(load(requested.payment_id), requested, now_ms(), deadline_ms)
    if decision.rejection is not None:
        log.warning(
            "refund %s of payment %s refused: %s", requested.refund_id, requested.payment_id, decision.rejection[1]
        )
    await apply(decision)


# concurrency=1 everywhere: one writer per payment partition, and faust #606 with more.
@app.agent(source(PAYMENT_CREATED), concurrency=1)
async def process_payment_method(stream: faust.StreamT) -> None:
    await pipeline.consume(stream, handle_created)


@app.agent(source(WALLET_MOVEMENT_UPDATES), concurrency=1)
async def process_wallet_debit(stream: faust.StreamT) -> None:
    await pipeline.consume(stream, handle_wallet_update)


@app.agent(source(EXTERNAL_PROVIDER_EVENTS), concurrency=1)
async def process_external_provider_updates(stream: faust.StreamT) -> None:
    await pipeline.consume(stream, handle_provider_update)


@app.agent(source(PAYMENT_OPERATION_COMPLETED), concurrency=1)
async def process_payment_operation_result(stream: faust.StreamT) -> None:
    await pipeline.consume(stream, handle_operation)


@app.agent(source(PAYMENT_OPERATION_INCONSISTENT), concurrency=1)
async def process_payment_inconsistent_operation(stream: faust.StreamT) -> None:
    await pipeline.consume(stream, handle_inconsistent)


@app.agent(source(PAYMENT_REFUND), concurrency=1)
async def process_refund(stream: faust.StreamT) -> None:
    await pipeline.consume(stream, handle_refund)


# Deadline operations already sent by this process; a restart sends them again, harmlessly
# (same event id, and the payment ignores an operation it already applied).
sent_deadlines: set[str] = set()


class DeadlineIndex:
    """Payments of this worker waiting on the provider (a charge or a refund), by their
    earliest deadline, so the 1 s sweep looks at those alone instead of the whole table.
    Rebuilt from the table after a rebalance and every REBUILD_S in case one came and went
    between two sweeps."""

    REBUILD_S = 30.0

    def __init__(self) -> None:
        self.due_at: dict[str, int] = {}
        self.built_at = float("-inf")

    def track(self, payment: domain.Payment) -> None:
        due = payment.next_deadline()
        if due is not None:
            self.due_at[payment.payment_id] = due
        else:
            self.due_at.pop(payment.payment_id, None)

    def rebuild_if_stale(self, now: float) -> None:
        if now - self.built_at >= self.REBUILD_S:
            self.due_at.clear()
            for _, raw in list(payments.items()):
                # Decoding every settled payment would stall the loop on a large table: only
                # those that may still wait on something.
                if raw and (
                    raw["status"] == "processing" or any(r["status"] == "pending" for r in raw["refunds"].values())
                ):
                    self.track(domain.from_dict(raw))
            self.built_at = now

    def overdue(self, now_millis: int) -> list[str]:
        return [payment_id for payment_id, due in self.due_at.items() if due <= now_millis]


deadlines = DeadlineIndex()


@app.timer(interval=1.0)
async def enforce_deadlines() -> None:
    """Fail the charges and refunds of this worker's partitions that waited on the provider past their deadline."""
    if app.rebalancing:
        deadlines.built_at = float("-inf")  # partitions move: rebuild from the table afterwards
        return
    deadlines.rebuild_if_stale(time.monotonic())
    now = now_ms()
    for payment_id in deadlines.overdue(now):
        payment = load(payment_id)
        due = None if payment is None else payment.next_deadline()
        if payment is None or due is None or due > now:
            deadlines.due_at.pop(payment_id, None)
            continue
        for op in domain.overdue_operations(payment, now):
            if op.operation_id not in sent_deadlines:
                log.info("payment %s: %s passed its deadline; failing it", op.payment_id, op.kind)
                await publish((op,))
                sent_deadlines.add(op.operation_id)


add_worker_pages(app, pipeline.processor, pipeline.guard, config.processing.stall_after_s)


# The provider token is the payer's card stand-in: it goes to the provider and nowhere else.
add_state_page(
    app,
    config,
    "/payments",
    source(PAYMENT_CREATED),
    payments,
    "payment_id",
    Action.READ_PAYMENT,
    hidden=frozenset({"provider_token"}),
)


if __name__ == "__main__":
    app.main()
