"""The fault suite's invariants: plain functions over events read from the log and over
PostgreSQL rows, each returning the violations it found (an empty list is a pass).

The log side and the PostgreSQL side are checked separately, so a projector bug cannot
hide a saga bug and the other way round; `views_match_log` then compares the two.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import TopicPartition

from connectors import topics
from connectors.avro import SingleObjectCodec
from connectors.config import Config
from connectors.log_reader import read_partitions
from domain.payment import TERMINAL_STATUSES as TERMINAL
from domain.payment import charge_operation_id, compensation_operation_id, refund_operation_id
from tests.support.kafka import reader

Event = dict[str, Any]

LOG_TOPICS = (
    topics.WALLET_MOVEMENT_UPDATES,
    topics.WALLET_BALANCE_UPDATE,
    topics.PAYMENT_CREATED,
    topics.PAYMENT_SUCCEEDED,
    topics.PAYMENT_FAILED,
    topics.PAYMENT_REFUND_REQUESTED,
    topics.PAYMENT_REFUNDED,
    topics.PAYMENT_REFUND_FAILED,
    topics.PAYMENT_OPERATION_COMPLETED,
    topics.WALLET_PAYMENT_OPERATIONS,
    topics.PAYMENT_OPERATION_INCONSISTENT,
)
STATUS_RANK = {"processing": 1, "completed": 2, "failed": 2, "partially_refunded": 3, "refunded": 4}


@dataclass
class LogState:
    """What the log says, de-duplicated the way every consumer de-duplicates (first wins)."""

    movements: dict[str, Event] = field(default_factory=dict)  # movement id -> MovementUpdated
    balances: dict[str, dict[int, Event]] = field(default_factory=lambda: defaultdict(dict))  # wallet -> version
    created: dict[str, Event] = field(default_factory=dict)
    succeeded: dict[str, Event] = field(default_factory=dict)
    failed: dict[str, Event] = field(default_factory=dict)
    refund_requests: dict[str, dict[str, Event]] = field(default_factory=lambda: defaultdict(dict))
    refunded: dict[str, dict[str, Event]] = field(default_factory=lambda: defaultdict(dict))  # payment -> refund
    refund_failed: dict[str, dict[str, Event]] = field(default_factory=lambda: defaultdict(dict))  # payment -> refund
    operations: dict[str, Event] = field(default_factory=dict)  # operation id -> first completion
    inconsistent: set[str] = field(default_factory=set)  # operation ids
    # operation id -> the provider's first pending answer: the view's row until an outcome replaces it
    pending: dict[str, Event] = field(default_factory=dict)
    dead_letters: list[Event] = field(default_factory=list)
    # Rows a projector could not store (dead-lettered): (view table, row id), whenever it happened.
    refused: set[tuple[str, str]] = field(default_factory=set)
    # Ids of the letters written before the scenario: one written again (a consumer redelivered an
    # earlier scenario's poison after a restart) is the same letter, not a new one.
    earlier_letters: set[str] = field(default_factory=set)
    conflicts: list[str] = field(default_factory=list)  # one id decided two different ways

    def add(self, event: Event) -> None:
        kind = event["envelope"]["event_type"]
        if kind == "MovementUpdated" and event["reason_code"] == "idempotency_conflict":
            pass  # a refused reuse of a movement id: it reports, it decides nothing
        elif kind == "MovementUpdated":
            self._first(self.movements, event["movement_id"], event, ("status", "balance_after", "wallet_version"))
        elif kind == "BalanceUpdated":
            self._first(self.balances[event["wallet_id"]], event["version"], event, ("balance", "movement_id"))
        elif kind == "PaymentCreated":
            self.created.setdefault(event["payment_id"], event)
        elif kind == "PaymentSucceeded":
            self.succeeded.setdefault(event["payment_id"], event)
        elif kind == "PaymentFailed":
            self.failed.setdefault(event["payment_id"], event)
        elif kind == "RefundRequested":
            self.refund_requests[event["payment_id"]].setdefault(event["refund_id"], event)
        elif kind == "PaymentRefunded":
            self.refunded[event["payment_id"]].setdefault(event["refund_id"], event)
        elif kind == "RefundFailed":
            self.refund_failed[event["payment_id"]].setdefault(event["refund_id"], event)
        elif kind == "PaymentOperationCompleted":
            self._first(self.operations, event["operation_id"], event, ("status",))
        elif kind == "PaymentOperationPending":
            self.pending.setdefault(event["operation_id"], event)
        elif kind == "PaymentOperationInconsistent":
            self.inconsistent.add(event["operation_id"])
            self.operations.setdefault(event["operation_id"], {**event, "failure_code": None, "failure_reason": None})
        elif kind == "DeadLetter":
            self.dead_letters.append(event)

    def _first(self, table: dict[Any, Event], key: Any, event: Event, same: tuple[str, ...]) -> None:
        seen = table.setdefault(key, event)
        if any(seen[name] != event[name] for name in same):
            self.conflicts.append(f"{event['envelope']['event_type']} {key} decided twice: {seen} vs {event}")

    def refunded_total(self, payment_id: str) -> int:
        return max((e["refunded_total"]["amount"] for e in self.refunded.get(payment_id, {}).values()), default=0)

    def status(self, payment_id: str) -> str:
        refunds = self.refunded.get(payment_id)
        if refunds:
            return max(refunds.values(), key=lambda e: e["refunded_total"]["amount"])["status"]
        if payment_id in self.succeeded:
            return "completed"
        if payment_id in self.failed:
            return "failed"
        return "processing"

    def refund_status(self, payment_id: str, refund_id: str) -> str:
        """A late success reconciled after a failure counts: succeeded wins over failed."""
        if refund_id in self.refunded.get(payment_id, {}):
            return "succeeded"
        return "failed" if refund_id in self.refund_failed.get(payment_id, {}) else "pending"

    def refund_ids(self, payment_id: str) -> set[str]:
        return (
            set(self.refund_requests.get(payment_id, {}))
            | set(self.refunded.get(payment_id, {}))
            | set(self.refund_failed.get(payment_id, {}))
        )


async def read_log(config: Config, dlq_from: dict[int, int] | None = None) -> LogState:
    """Every event of the wallet and payment topics now on the log; the dead-letter topic from `dlq_from`."""
    codec = SingleObjectCodec()
    state = LogState()
    parts = [TopicPartition(t.name, p) for t in LOG_TOPICS for p in range(config.kafka.partitions)]
    async for _, _, _, value in read_partitions(reader(config), parts):
        try:
            state.add(codec.decode(value))
        except Exception:  # noqa: BLE001 - poison a scenario injected; the DLQ check accounts for it
            continue
    dlq = [TopicPartition(topics.PAYMENT_DLQ.name, p) for p in range(config.kafka.partitions)]
    async for tp, offset, _, value in read_partitions(reader(config), dlq):
        letter = codec.decode(value)
        if letter["consumer"].startswith("projector:"):
            state.refused |= refused_rows(codec, letter["value"])
        if offset >= (dlq_from or {}).get(tp.partition, 0):
            if letter["envelope"]["event_id"] not in state.earlier_letters:
                state.add(letter)
        else:
            state.earlier_letters.add(letter["envelope"]["event_id"])
    return state


def refused_rows(codec: SingleObjectCodec, value: bytes) -> set[tuple[str, str]]:
    """The view rows a projector's dead letter kept out of PostgreSQL."""
    try:
        event = codec.decode(value)
    except Exception:  # noqa: BLE001 - undecodable: it names no row
        return set()
    kind = event["envelope"]["event_type"]
    if kind == "MovementUpdated":
        return {("wallet_movements", event["movement_id"])}
    if kind == "PaymentCreated":
        return {("payments", event["payment_id"])}
    if kind in ("PaymentOperationCompleted", "PaymentOperationInconsistent", "PaymentOperationPending"):
        return {("payment_operations", event["operation_id"])}
    return set()


def operation_row(op: Event, inconsistent: bool) -> tuple[Any, ...]:
    """An operation's view row: its first outcome, else the provider's pending answer (which has
    no status or source of its own: the row says pending, from the provider)."""
    return (
        op["payment_id"],
        op["kind"],
        op.get("status", "pending"),
        op["amount"]["amount"],
        op.get("source", "provider"),
        inconsistent,
    )


def _delta(m: Event) -> int:
    return m["amount"]["amount"] if m["type"] == "income" else -m["amount"]["amount"]


def _applied_by_wallet(log: LogState) -> dict[str, list[Event]]:
    by_wallet: dict[str, list[Event]] = defaultdict(list)
    for m in log.movements.values():
        if m["status"] == "applied":
            by_wallet[m["wallet_id"]].append(m)
    return by_wallet


# ------------------------------------------------------------------ from the log


def log_wallets_balanced(log: LogState) -> list[str]:
    """Each wallet's applied movements form one unbroken version chain whose running sum is
    every balance_after and the last BalanceUpdated, and never goes below zero."""
    bad = list(log.conflicts)
    applied = _applied_by_wallet(log)
    for wallet_id in set(applied) | set(log.balances):
        running = 0
        for i, m in enumerate(sorted(applied.get(wallet_id, []), key=lambda m: m["wallet_version"]), start=1):
            running += _delta(m)
            if m["wallet_version"] != i or m["balance_after"] != running:
                bad.append(
                    f"wallet {wallet_id}: movement {m['movement_id']} v{m['wallet_version']} "
                    f"balance_after {m['balance_after']}, expected v{i} balance {running}"
                )
                break
            if running < 0:
                bad.append(f"wallet {wallet_id} went below zero ({running}) at v{i}")
        updates = log.balances.get(wallet_id, {})
        negative = [v for v, e in updates.items() if e["balance"]["amount"] < 0]
        if negative:
            bad.append(f"wallet {wallet_id}: BalanceUpdated below zero at versions {negative[:5]}")
        if updates:
            last = updates[max(updates)]
            if last["balance"]["amount"] != running:
                bad.append(
                    f"wallet {wallet_id}: last BalanceUpdated v{last['version']} says "
                    f"{last['balance']['amount']}, applied movements sum to {running}"
                )
    return bad


def log_money_conserved(log: LogState, wallet_ids: Iterable[str]) -> list[str]:
    """Sum of balances = openings + incomes - completed wallet payments + refunds, where the
    payment terms come from the payment topics, not from the wallet's movements."""
    wallets = set(wallet_ids)
    balances = sum(max(log.balances[w].items())[1]["balance"]["amount"] for w in wallets if log.balances.get(w))
    outside = sum(  # openings, incomes and any manual expenses: movements no payment caused
        _delta(m)
        for m in log.movements.values()
        if m["status"] == "applied" and m["wallet_id"] in wallets and m["payment_id"] is None
    )
    paid = refunds = 0
    for pid, created in log.created.items():
        if created["method"] == "wallet" and created["wallet_id"] in wallets and pid in log.succeeded:
            paid += created["amount"]["amount"]
            refunds += log.refunded_total(pid)
    expected = outside - paid + refunds
    if balances != expected:
        return [
            f"money not conserved: balances sum to {balances}, openings+incomes {outside} "
            f"- completed wallet payments {paid} + refunds {refunds} = {expected}"
        ]
    return []


def log_payments_settled(log: LogState, payment_ids: Iterable[str]) -> list[str]:
    """Each payment is terminal, each accepted refund done, and its status agrees with
    its wallet movements (wallet) or provider operations (external)."""
    bad = list(c for c in log.conflicts if "PaymentOperation" in c)
    by_payment: dict[str, list[Event]] = defaultdict(list)
    for m in log.movements.values():
        if m["status"] == "applied" and m["payment_id"]:
            by_payment[m["payment_id"]].append(m)
    ops: dict[str, list[Event]] = defaultdict(list)
    for op in log.operations.values():
        ops[op["payment_id"]].append(op)
    for pid in payment_ids:
        created = log.created.get(pid)
        if created is None:
            continue  # never published (the API call failed before Kafka took it)
        status, amount = log.status(pid), created["amount"]["amount"]
        if status not in TERMINAL:
            bad.append(f"payment {pid} ({created['method']}) not terminal: {status}")
            continue
        if pid in log.succeeded and pid in log.failed:
            bad.append(f"payment {pid} both succeeded and failed")
        refunded = log.refunded_total(pid)
        good_ops = {op["operation_id"]: op for op in ops[pid] if op["status"] == "succeeded"}
        compensated = compensation_operation_id(pid) in good_ops
        bad += log_refunds_settled(log, pid, good_ops)
        charged = charge_operation_id(pid, created["method"]) in good_ops
        if pid in log.succeeded and not charged:
            bad.append(f"payment {pid} completed without a succeeded charge operation")
        if pid in log.failed and charged and not compensated:
            bad.append(f"payment {pid} failed but its charge succeeded and was never compensated")
        if created["method"] == "wallet":
            net = sum(_delta(m) for m in by_payment[pid])
            want = -amount + refunded if pid in log.succeeded else 0
            debits = [m for m in by_payment[pid] if m["type"] == "expense"]
            if net != want or len(debits) > 1:
                bad.append(
                    f"wallet payment {pid} is {status} but its movements net {net} "
                    f"({len(debits)} debit(s)), expected {want}"
                )
    return bad


def log_refunds_settled(log: LogState, pid: str, good_ops: dict[str, Event]) -> list[str]:
    """Every refund reached an outcome; the refunded total is the sum of the succeeded refunds,
    each backed by a succeeded refund operation of its amount; a refund both failed and
    refunded is a late success reconciled (flagged inconsistent); a refund operation that
    returned money without being counted is flagged for an operator."""
    bad = []
    pending = [r for r in log.refund_ids(pid) if log.refund_status(pid, r) == "pending"]
    if pending:
        bad.append(f"payment {pid}: refund(s) {sorted(pending)} requested but never succeeded or failed")
    succeeded = log.refunded.get(pid, {})
    total = sum(e["amount"]["amount"] for e in succeeded.values())
    if total != log.refunded_total(pid):
        bad.append(f"payment {pid}: succeeded refunds sum to {total}, refunded total {log.refunded_total(pid)}")
    for refund_id, event in succeeded.items():
        op = good_ops.get(refund_operation_id(refund_id))
        if op is None or op["amount"] != event["amount"]:
            bad.append(f"payment {pid}: refund {refund_id} refunded {event['amount']} but its operation says {op}")
        if refund_id in log.refund_failed.get(pid, {}) and refund_operation_id(refund_id) not in log.inconsistent:
            bad.append(f"payment {pid}: refund {refund_id} both failed and refunded, never flagged as reconciled")
    counted = {refund_operation_id(r) for r in succeeded} | {compensation_operation_id(pid)}
    for oid, op in good_ops.items():
        if op["kind"] == "refund" and oid not in counted and oid not in log.inconsistent:
            bad.append(f"payment {pid}: refund operation {oid} returned {op['amount']}, neither counted nor flagged")
    return bad


def log_payment_movements_agree(log: LogState, payment_ids: Iterable[str]) -> list[str]:
    """Each terminal wallet payment of these: the movements it caused, and any revert of
    them whoever asked for it, net to -(amount - refunded), or to 0 if it failed. A manual
    revert of a payment's debit is counted against that payment, so paying back twice
    (revert plus refund) shows here even though each step looks right alone."""
    net: dict[str, int] = defaultdict(int)
    for m in log.movements.values():
        reverted = log.movements.get(m["reverts_movement_id"] or "")
        owner = m["payment_id"] or (reverted["payment_id"] if reverted else None)
        if m["status"] == "applied" and owner:
            net[owner] += _delta(m)
    bad = []
    for pid in payment_ids:
        created, status = log.created.get(pid), log.status(pid)
        if created is None or created["method"] != "wallet" or status not in TERMINAL:
            continue
        want = 0 if status == "failed" else -(created["amount"]["amount"] - log.refunded_total(pid))
        if net[pid] != want:
            bad.append(f"wallet payment {pid} is {status}: its movements and their reverts net {net[pid]}, want {want}")
    return bad


def provider_agrees(log: LogState, objects: dict[str, list[dict[str, Any]]]) -> list[str]:
    """External payments against the provider's own objects (by payment id)."""
    bad = []
    for pid, objs in objects.items():
        charges = [o for o in objs if o["object"] == "charge"]
        taken = sum(o["amount"] - o["refunded"] for o in charges if o["status"] == "succeeded")
        pending = [o["id"] for o in objs if o["status"] == "pending"]
        if pending:  # a webhook still to come (a late success): not settled yet
            bad.append(f"payment {pid}: provider objects {pending} still pending")
        if len(charges) > 1:
            bad.append(f"payment {pid}: {len(charges)} provider charges")
        kept = log.created[pid]["amount"]["amount"] - log.refunded_total(pid) if pid in log.succeeded else 0
        if taken != kept:
            bad.append(f"payment {pid} is {log.status(pid)}: provider holds {taken}, expected {kept}")
        # The provider's refunds (compensations aside) are exactly the refunds we counted.
        theirs = {
            o["metadata"].get("operation_id"): o["amount"]
            for o in objs
            if o["object"] == "refund"
            and o["status"] == "succeeded"
            and o["metadata"].get("operation_id") != compensation_operation_id(pid)
        }
        ours = {refund_operation_id(r): e["amount"]["amount"] for r, e in log.refunded.get(pid, {}).items()}
        if theirs != ours:
            bad.append(f"payment {pid}: provider refunds {theirs} != refunds counted on the log {ours}")
    return bad


def dead_letters_only(
    log: LogState, injected: list[tuple[str, bytes, bytes]], projector_poison: set[tuple[str, bytes]] = frozenset()
) -> list[str]:
    """The dead-letter topic (since the scenario began) holds exactly the poison it injected: the
    undecodable messages every worker refuses, and the events a projector could not store."""
    found = {(d["source_topic"], d["key"], d["value"]) for d in log.dead_letters}
    refused = {(d["source_topic"], d["key"]) for d in log.dead_letters if d["consumer"].startswith("projector:")}
    bad = [
        f"unexpected dead letter from {d['consumer']} of {d['source_topic']}@{d['source_partition']}/"
        f"{d['source_offset']}: {d['error_type']}: {d['error_message'][:120]}"
        for d in log.dead_letters
        if (d["source_topic"], d["key"], d["value"]) not in set(injected)
        and (d["source_topic"], d["key"]) not in projector_poison
    ]
    bad += [f"injected poison on {t} (key {k!r}) never dead-lettered" for t, k, v in injected if (t, k, v) not in found]
    bad += [f"a projector never dead-lettered the poison on {t} (key {k!r})" for t, k in projector_poison - refused]
    return bad


def log_accepted(log: LogState, accepted: set[str]) -> list[str]:
    """A payment the API accepted (2xx) reached the log."""
    return [
        f"payment {pid} was accepted but is not on {topics.PAYMENT_CREATED.name}" for pid in accepted - set(log.created)
    ]


# ------------------------------------------------------------------ from PostgreSQL


async def pg_accepted(conn: asyncpg.Connection, accepted: set[str]) -> list[str]:
    """A payment the API accepted (2xx) is in the payment views."""
    found = {str(r["id"]) for r in await conn.fetch("SELECT id FROM payments WHERE id = ANY($1::uuid[])", accepted)}
    return [f"payment {pid} was accepted but is missing from PostgreSQL" for pid in sorted(accepted - found)]


async def pg_wallets_balanced(conn: asyncpg.Connection, wallet_ids: list[str]) -> list[str]:
    rows = await conn.fetch(
        """SELECT w.id, w.balance, COALESCE(sum(CASE WHEN m.type = 'income' THEN m.amount ELSE -m.amount END)
                  FILTER (WHERE m.status = 'applied'), 0)::bigint AS total,
                  COALESCE(min(m.balance_after) FILTER (WHERE m.status = 'applied'), 0) AS lowest
           FROM wallets w LEFT JOIN wallet_movements m ON m.wallet_id = w.id
           WHERE w.id = ANY($1::uuid[]) GROUP BY w.id, w.balance""",
        wallet_ids,
    )
    bad = [
        f"pg wallet {r['id']}: balance {r['balance']} but applied movements sum to {r['total']}"
        for r in rows
        if r["balance"] != r["total"]
    ]
    bad += [f"pg wallet {r['id']}: a movement left balance {r['lowest']}" for r in rows if r["lowest"] < 0]
    if len(rows) != len(wallet_ids):
        bad.append(f"pg: {len(wallet_ids) - len(rows)} scenario wallet(s) missing from the wallets view")
    return bad


async def pg_money_conserved(conn: asyncpg.Connection, wallet_ids: list[str]) -> list[str]:
    balances = await conn.fetchval(
        "SELECT COALESCE(sum(balance), 0) FROM wallets WHERE id = ANY($1::uuid[])", wallet_ids
    )
    outside = await conn.fetchval(
        "SELECT COALESCE(sum(CASE WHEN type = 'income' THEN amount ELSE -amount END), 0) FROM wallet_movements "
        "WHERE wallet_id = ANY($1::uuid[]) AND status = 'applied' AND payment_id IS NULL",
        wallet_ids,
    )
    row = await conn.fetchrow(
        "SELECT COALESCE(sum(amount), 0) AS paid, COALESCE(sum(refunded_amount), 0) AS refunds FROM payments "
        "WHERE method = 'wallet' AND wallet_id = ANY($1::uuid[]) AND status <> 'failed' AND status_rank >= 2",
        wallet_ids,
    )
    expected = outside - row["paid"] + row["refunds"]
    if balances != expected:
        return [
            f"pg money not conserved: balances {balances}, openings+incomes {outside} "
            f"- completed {row['paid']} + refunds {row['refunds']} = {expected}"
        ]
    return []


async def pg_payments_settled(conn: asyncpg.Connection, payment_ids: list[str]) -> list[str]:
    rows = await conn.fetch(
        """SELECT p.id, p.method, p.status, p.amount, p.refunded_amount,
                  (SELECT COALESCE(sum(CASE WHEN m.type = 'income' THEN m.amount ELSE -m.amount END), 0)::bigint
                   FROM wallet_movements m WHERE m.payment_id = p.id AND m.status = 'applied') AS net,
                  (SELECT COALESCE(sum(r.amount), 0)::bigint FROM payment_refunds r
                   WHERE r.payment_id = p.id AND r.status <> 'failed') AS reserved,
                  (SELECT COALESCE(sum(r.amount), 0)::bigint FROM payment_refunds r
                   WHERE r.payment_id = p.id AND r.status = 'succeeded') AS succeeded,
                  (SELECT count(*) FROM payment_refunds r
                   WHERE r.payment_id = p.id AND r.status = 'pending') AS pending
           FROM payments p WHERE p.id = ANY($1::uuid[])""",
        payment_ids,
    )
    refund_rows = await conn.fetch(
        "SELECT id, payment_id FROM payment_refunds WHERE payment_id = ANY($1::uuid[]) AND status = 'succeeded'",
        payment_ids,
    )
    counted: dict[str, set[str]] = defaultdict(set)
    for refund in refund_rows:
        counted[str(refund["payment_id"])].add(refund_operation_id(str(refund["id"])))
    ops = await conn.fetch(
        "SELECT id, payment_id, kind, status, amount FROM payment_operations WHERE payment_id = ANY($1::uuid[])",
        payment_ids,
    )
    good: dict[str, dict[str, asyncpg.Record]] = defaultdict(dict)
    for op in ops:
        if op["status"] == "succeeded":
            good[str(op["payment_id"])][str(op["id"])] = op
    bad = []
    for r in rows:
        pid, status = str(r["id"]), r["status"]
        if status not in TERMINAL:
            bad.append(f"pg payment {pid} ({r['method']}) not terminal: {status}")
            continue
        if r["pending"]:
            bad.append(f"pg payment {pid}: {r['pending']} refund reservation(s) still pending")
        if r["reserved"] != r["refunded_amount"] or r["succeeded"] != r["refunded_amount"]:
            bad.append(
                f"pg payment {pid}: refunds reserved {r['reserved']}, succeeded {r['succeeded']}, "
                f"refunded {r['refunded_amount']}"
            )
        mine = good[pid]
        charged = charge_operation_id(pid, r["method"]) in mine
        compensated = compensation_operation_id(pid) in mine
        refund_ops = sum(o["amount"] for oid, o in mine.items() if oid in counted[pid])
        if refund_ops != r["refunded_amount"]:
            bad.append(f"pg payment {pid}: refund operations {refund_ops}, refunded_amount {r['refunded_amount']}")
        if (status != "failed") != charged and not (status == "failed" and compensated):
            bad.append(f"pg payment {pid} is {status} but charge succeeded={charged}")
        if r["method"] == "wallet":
            want = 0 if status == "failed" else -r["amount"] + r["refunded_amount"]
            if r["net"] != want:
                bad.append(f"pg wallet payment {pid} is {status} but its movements net {r['net']}, expected {want}")
    return bad


async def pg_payment_movements_agree(conn: asyncpg.Connection, payment_ids: list[str]) -> list[str]:
    """The same over the views: movements belong to a payment by payment_id, or by reverting
    a movement that does."""
    rows = await conn.fetch(
        """WITH attributed AS (
               SELECT COALESCE(m.payment_id, o.payment_id) AS payment_id,
                      CASE m.type WHEN 'income' THEN m.amount ELSE -m.amount END AS delta
               FROM wallet_movements m LEFT JOIN wallet_movements o ON o.id = m.reverts_movement_id
               WHERE m.status = 'applied' AND COALESCE(m.payment_id, o.payment_id) IS NOT NULL)
           SELECT p.id, p.status, p.amount, p.refunded_amount, COALESCE(sum(a.delta), 0)::bigint AS net
           FROM payments p LEFT JOIN attributed a ON a.payment_id = p.id
           WHERE p.method = 'wallet' AND p.status = ANY($1::text[]) AND p.id = ANY($2::uuid[])
           GROUP BY p.id""",
        list(TERMINAL),
        payment_ids,
    )
    bad = []
    for r in rows:
        want = 0 if r["status"] == "failed" else -(r["amount"] - r["refunded_amount"])
        if r["net"] != want:
            bad.append(
                f"pg wallet payment {r['id']} is {r['status']}: movements and reverts net {r['net']}, want {want}"
            )
    return bad


def _norm(value: Any) -> Any:
    return None if value is None else str(value).strip() if not isinstance(value, (int, bool)) else value


async def views_match_log(conn: asyncpg.Connection, log: LogState) -> list[str]:
    """The five view tables against a rebuild computed here from the log, row by row."""
    expected: dict[str, dict[str, tuple[Any, ...]]] = {
        "wallets": {
            w: (last["user_id"], last["balance"]["currency"], last["balance"]["amount"], v, last["movement_id"])
            for w, updates in log.balances.items()
            if updates
            for v, last in [max(updates.items())]
        },
        "wallet_movements": {
            mid: (
                m["wallet_id"],
                m["type"],
                m["amount"]["amount"],
                m["status"],
                m["reason_code"],
                m["balance_after"],
                m["wallet_version"],
                m["reverts_movement_id"],
                m["payment_id"],
                m["envelope"]["event_id"],
            )
            for mid, m in log.movements.items()
        },
        "payments": {
            pid: (
                e["method"],
                e["amount"]["amount"],
                log.status(pid),
                log.refunded_total(pid),
                log.failed[pid]["reason_code"] if pid in log.failed and pid not in log.succeeded else None,
            )
            for pid in set(log.created) | set(log.succeeded) | set(log.failed)
            for e in [log.created.get(pid) or log.succeeded.get(pid) or log.failed[pid]]
        },
        "payment_refunds": {
            rid: (pid, event["amount"]["amount"], log.refund_status(pid, rid))
            for pid in set(log.refund_requests) | set(log.refunded) | set(log.refund_failed)
            for rid in log.refund_ids(pid)
            for event in [
                log.refund_requests[pid].get(rid) or log.refunded[pid].get(rid) or log.refund_failed[pid][rid]
            ]
        },
        "payment_operations": {
            oid: operation_row(op, oid in log.inconsistent) for oid, op in {**log.pending, **log.operations}.items()
        },
    }
    queries = {
        "wallets": "SELECT id, user_id, currency, balance, version, last_movement_id FROM wallets",
        "wallet_movements": "SELECT id, wallet_id, type, amount, status, reason_code, balance_after, wallet_version, "
        "reverts_movement_id, payment_id, event_id FROM wallet_movements",
        "payments": "SELECT id, method, amount, status, refunded_amount, reason_code FROM payments",
        "payment_operations": "SELECT id, payment_id, kind, status, amount, source, inconsistent "
        "FROM payment_operations",
        "payment_refunds": "SELECT id, payment_id, amount, status FROM payment_refunds",
    }
    bad = []
    for table, query in queries.items():
        actual = {str(r[0]): tuple(_norm(v) for v in list(r)[1:]) for r in await conn.fetch(query)}
        want = {k: tuple(_norm(v) for v in row) for k, row in expected[table].items()}
        diff = [k for k in set(want) | set(actual) if want.get(k) != actual.get(k) and (table, k) not in log.refused]
        for k in sorted(diff)[:5]:
            bad.append(f"view {table} row {k}: pg {actual.get(k)} != log rebuild {want.get(k)}")
        if len(diff) > 5:
            bad.append(f"view {table}: {len(diff) - 5} more rows differ")
    return bad
