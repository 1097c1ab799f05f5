"""The payment saga's steps: each takes one event, asks the domain, writes the payment's
state, makes it durable, publishes what was decided, then performs the requests.

Everything a step touches is passed in (see `streams.payment_worker.bootstrap`), so a unit
test builds the steps with a dict for the table, a list for what they send and fake providers.
The `payments` table is written only by steps whose source topic is keyed by payment id,
because a table write goes to the changelog partition of the event being processed: that is
why the wallet answers a payment's movement on `wallet.payment_operation.completed`, keyed by
payment, beside its wallet-keyed `wallet.movement_updates`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from connectors.provider_client import PaymentProvider, ProviderRejected, ProviderUnavailable
from connectors.topics import (
    PAYMENT_FAILED,
    PAYMENT_OPERATION_COMPLETED,
    PAYMENT_OPERATION_INCONSISTENT,
    PAYMENT_REFUND_FAILED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCEEDED,
    WALLET_MOVEMENT_REQUIRED,
)
from connectors.tracing import continue_or_start, current_request_id, current_traceparent, log_fields
from domain import payment as domain
from domain.events import EventMeta
from domain.ids import derive_id
from streams.envelope import command_record, from_record, meta_of, money, now_ms, to_record
from streams.payment_deadlines import DeadlineIndex
from streams.payment_observations import observe_refunds_and_mismatches, observe_saga_end
from streams.ports import Durable, Sender, Table

log = logging.getLogger(__name__)

# Wire names: payment.success carries PaymentSucceeded (see docs/event-catalog.md).
OUTPUT_TOPIC = {
    "PaymentSucceeded": PAYMENT_SUCCEEDED.name,
    "PaymentFailed": PAYMENT_FAILED.name,
    "PaymentOperationInconsistent": PAYMENT_OPERATION_INCONSISTENT.name,
    "PaymentRefunded": PAYMENT_REFUNDED.name,
    "RefundFailed": PAYMENT_REFUND_FAILED.name,
    "PaymentOperationCompleted": PAYMENT_OPERATION_COMPLETED.name,
    # The provider's pending answer travels with the operation's outcomes: same key, same step.
    "PaymentOperationPending": PAYMENT_OPERATION_COMPLETED.name,
}


# Beside the domain's fields, a payment's row keeps the trace and request id of the caller's
# command that made it wait (its creation, or its latest refund request): the deadline sweep
# runs outside any event, and its events must continue that trace, not start one.
CONTEXT_KEY = "context"


def payment_of(row: dict[str, Any]) -> domain.Payment:
    return domain.from_dict({k: v for k, v in row.items() if k != CONTEXT_KEY})


class UnprocessableEvent(ValueError):
    """An event this step cannot apply; the Processor retries, then dead-letters it with this reason."""


def expect(event: dict[str, Any], *types: str) -> str:
    event_type: str = event["envelope"]["event_type"]
    if event_type not in types:
        raise UnprocessableEvent(f"unexpected event type {event_type}; expected {', '.join(types)}")
    return event_type


@dataclass
class PaymentSteps:
    payments: Table
    send: Sender
    durable: Durable
    # The provider port's adapters (connectors/providers.py), by the name a payment gives.
    providers: Mapping[str, PaymentProvider]
    refund_deadline_ms: int
    deadlines: DeadlineIndex
    now: Callable[[], int] = now_ms
    # Deadline operations already sent by this process; a restart sends them again, harmlessly
    # (same event id, and the payment ignores an operation it already applied).
    sent_deadlines: set[str] = field(default_factory=set)

    def load(self, payment_id: str) -> domain.Payment | None:
        raw = self.payments.get(payment_id)
        return payment_of(raw) if raw else None

    # ------------------------------------------------------------ the steps, one per agent

    async def process_payment_method(self, event: dict[str, Any]) -> None:
        """PaymentCreated: open the payment and ask its method (wallet or provider) for the money."""
        expect(event, "PaymentCreated")
        created = from_record(domain.RequestPayment, event)
        decision = domain.decide_created(self.load(created.payment_id), created, self.now())
        await self.apply(decision, created.payment_id, from_caller=True)

    async def process_wallet_operation(self, event: dict[str, Any]) -> None:
        """PaymentOperationCompleted from the wallet (a debit, refund credit or compensation):
        apply it. Only the wallet writes this topic, so only its own kind of operation counts."""
        expect(event, "PaymentOperationCompleted")
        if event["source"] != "wallet":
            raise UnprocessableEvent(f"an operation from {event['source']!r} on the wallet's topic")
        await self.process_payment_operation_result(event)

    async def process_provider_update(self, event: dict[str, Any]) -> None:
        """ProviderUpdate from a webhook: its operation, once the provider has decided."""
        expect(event, "ProviderUpdate")
        op = domain.operation_from_provider(
            meta_of(event["envelope"]),
            event["payment_id"],
            event["provider"],
            event["provider_reference"],
            event["operation_id"],
            event["kind"],
            event["status"],
            money(event["amount"]),
            event["failure_reason"],
            acting_for=self.load(event["payment_id"]),
        )
        if op is not None:
            await self.publish((op,))

    async def process_payment_operation_result(self, event: dict[str, Any]) -> None:
        """PaymentOperationCompleted: apply it; the payment succeeds, fails, refunds or turns inconsistent.
        PaymentOperationPending: keep the provider's reference for the operation."""
        if expect(event, "PaymentOperationCompleted", "PaymentOperationPending") == "PaymentOperationPending":
            pending = from_record(domain.PaymentOperationPending, event)
            await self.apply(domain.decide_pending(self.load(pending.payment_id), pending), pending.payment_id)
            return
        op = from_record(domain.PaymentOperationCompleted, event)
        decision = domain.decide_operation(self.load(op.payment_id), op, self.now())
        if decision.rejection is not None:
            raise UnprocessableEvent(decision.rejection[1])
        await self.apply(decision, op.payment_id)

    async def compensate_inconsistent_operation(self, event: dict[str, Any]) -> None:
        """PaymentOperationInconsistent: give back money taken for a payment that cannot take it."""
        expect(event, "PaymentOperationInconsistent")
        inconsistent = from_record(domain.PaymentOperationInconsistent, event)
        decision = domain.decide_compensation(self.load(inconsistent.payment_id), inconsistent)
        if decision.rejection is not None:
            log.warning("not compensating %s: %s", inconsistent.operation_id, decision.rejection[1])
        await self.apply(decision, inconsistent.payment_id)

    async def process_refund(self, event: dict[str, Any]) -> None:
        """RefundRequested: ask the wallet or the provider, or refuse it."""
        expect(event, "RefundRequested")
        requested = from_record(domain.RefundRequested, event)
        decision = domain.decide_refund(self.load(requested.payment_id), requested, self.now(), self.refund_deadline_ms)
        if decision.rejection is not None:
            log.warning(
                "refund %s of payment %s refused: %s", requested.refund_id, requested.payment_id, decision.rejection[1]
            )
        await self.apply(decision, requested.payment_id, from_caller=True)

    async def enforce_deadlines(self, rebalancing: bool, monotonic_now: float) -> None:
        """Fail the charges and refunds of this worker's partitions that waited on the provider past their deadline."""
        if rebalancing:
            self.deadlines.built_at = float("-inf")  # partitions move: rebuild from the table afterwards
            return
        self.deadlines.rebuild_if_stale(monotonic_now)
        now = self.now()
        for payment_id in self.deadlines.overdue(now):
            payment = self.load(payment_id)
            due = None if payment is None else payment.next_deadline()
            if payment is None or due is None or due > now:
                self.deadlines.due_at.pop(payment_id, None)
                continue
            with self.continuing(payment_id):
                for op in domain.overdue_operations(payment, now):
                    if op.operation_id not in self.sent_deadlines:
                        log.info("payment %s: %s passed its deadline; failing it", op.payment_id, op.kind)
                        await self.publish((op,))
                        self.sent_deadlines.add(op.operation_id)

    @contextmanager
    def continuing(self, payment_id: str) -> Iterator[None]:
        """The trace and request id the payment keeps, in hand for what the block publishes."""
        context = (self.payments.get(payment_id) or {}).get(CONTEXT_KEY) or {}
        trace_token = current_traceparent.set(continue_or_start(context.get("traceparent")))
        request_token = current_request_id.set(context.get("request_id"))
        fields_token = log_fields.set({"payment_id": payment_id})
        try:
            yield
        finally:
            log_fields.reset(fields_token)
            current_request_id.reset(request_token)
            current_traceparent.reset(trace_token)

    # ------------------------------------------------------------ what every step ends with

    async def apply(self, decision: domain.Decision, payment_id: str, from_caller: bool = False) -> None:
        """Table first, then events, then requests: a crash in between re-emits the same ids on redelivery.
        `from_caller`: the event is a caller's command, whose trace the payment keeps from now on."""
        if decision.payment is not None:
            row = domain.to_dict(decision.payment)
            context = self.context_in_hand() if from_caller else (self.payments.get(payment_id) or {}).get(CONTEXT_KEY)
            if context:
                row[CONTEXT_KEY] = context
            self.payments[decision.payment.payment_id] = row
            self.deadlines.track(decision.payment)
            await self.durable()
        elif (row := self.payments.get(payment_id)) is not None:
            # Nothing new to decide: a redelivery, most likely. The local store (RocksDB) takes a
            # write before its changelog record is acknowledged, so a SIGKILL can leave it ahead
            # of the changelog; writing the row again brings the changelog level with it.
            self.payments[payment_id] = row
            self.deadlines.track(payment_of(row), rewrite=True)
            await self.durable()
        await self.publish(decision.events)
        if decision.payment is not None:
            observe_saga_end(decision.payment, decision.events)
        if decision.payment is not None or decision.rejection is not None:  # decided now, not re-emitted
            observe_refunds_and_mismatches(decision.events)
        for effect in decision.effects:
            await self.perform(effect)

    @staticmethod
    def context_in_hand() -> dict[str, str]:
        traceparent, request_id = current_traceparent.get(), current_request_id.get()
        context = {"traceparent": traceparent} if traceparent else {}
        return context | ({"request_id": request_id} if request_id else {})

    async def publish(self, events: tuple[Any, ...]) -> None:
        """The events as decided: the domain has stamped each with the actor it acts for."""
        for event in events:
            record = to_record(event)
            await self.send(OUTPUT_TOPIC[record["envelope"]["event_type"]], event.payment_id.encode(), record)

    async def perform(self, effect: domain.Effect) -> None:
        if isinstance(effect, domain.WalletMovement):
            await self.send(WALLET_MOVEMENT_REQUIRED.name, effect.wallet_id.encode(), movement_required(effect))
            return
        provider = self.providers.get(effect.provider)
        try:
            if provider is None:
                raise ProviderUnavailable(f"provider {effect.provider!r} is not offered by this deployment")
            if isinstance(effect, domain.ProviderCharge):
                answer = await provider.charge(
                    effect.operation_id, effect.payment_id, effect.amount.amount, effect.amount.currency, effect.token
                )
            else:
                answer = await provider.refund(
                    effect.operation_id,
                    effect.payment_id,
                    effect.charge_reference,
                    effect.amount.amount,
                    effect.amount.currency,
                )
        except ProviderRejected as exc:
            await self.publish((domain.refused_by_provider(effect, str(exc), self.now(), exc.decline_code),))
        except ProviderUnavailable as exc:
            if isinstance(effect, domain.ProviderCharge) or effect.deadline_at is not None:
                # The operation may or may not exist at the provider; its deadline fails it, and a
                # late success is compensated (a charge) or reconciled (a refund).
                log.warning(
                    "%s %s not confirmed by the provider: %s", domain.effect_kind(effect), effect.operation_id, exc
                )
            else:
                raise
        else:
            accepted = domain.accepted_by_provider(effect, answer.reference, answer.status, self.now())
            await self.publish((accepted,))


def movement_required(effect: domain.WalletMovement) -> dict[str, Any]:
    """The command asking the wallet for a payment's movement; its id is the movement's."""
    return command_record(
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
