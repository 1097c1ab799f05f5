"""The auditor's ledger as plain, JSON-able data and back: what a checkpoint stores.

`ledger_to_dict` is everything still open (payments not judged or judged since the last
checkpoint, violations, money entered, the sums over all wallets); `payment_to_dict` is one
judged payment's book and `wallet_to_dict` one wallet's running figures, both stored apart and
read back when news names them again (`restore_payments`, `restore_wallets`). Times are monotonic
seconds of one process, so they are not stored: a restored book has had news `now`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from domain.audit import Ledger
from domain.audit_books import FIGURE_KINDS, At, Movement, PaymentBook, Violation, WalletBook

# 2: the wallets are stored apart; a format 1 state (wallets inside) is still read.
STATE_FORMAT = 2
Data = dict[str, Any]


def at_to_list(at: At) -> list[Any]:
    return [at.topic, at.partition, at.offset]


def at_from_list(data: list[Any]) -> At:
    return At(str(data[0]), int(data[1]), int(data[2]))


def movement_to_list(m: Movement) -> list[Any]:
    return [m.movement_id, m.wallet_id, m.delta, m.currency, m.version, m.balance_after, m.payment_id, at_to_list(m.at)]


def movement_from_list(data: list[Any]) -> Movement:
    movement_id, wallet_id, delta, currency, version, balance_after, payment_id, at = data
    return Movement(movement_id, wallet_id, delta, currency, version, balance_after, payment_id, at_from_list(at))


def violation_to_dict(v: Violation) -> Data:
    return {
        "invariant": v.invariant,
        "subject": v.subject,
        "message": v.message,
        "at": at_to_list(v.at),
        "cleared": v.cleared,
        "number": v.number,
    }


def violation_from_dict(data: Data) -> Violation:
    return Violation(
        data["invariant"], data["subject"], data["message"], at_from_list(data["at"]), data["cleared"], data["number"]
    )


def _occurred_to(value: Any) -> Any:
    # Avro's timestamp-millis decodes to a datetime; JSON has no such type.
    return {"datetime": value.isoformat()} if isinstance(value, datetime) else value


def _occurred_from(value: Any) -> Any:
    return datetime.fromisoformat(value["datetime"]) if isinstance(value, dict) else value


def wallet_to_dict(book: WalletBook) -> Data:
    """The folded figures, the versions not folded yet and the few folded ones still kept (a
    restart must not change what a redelivery or a revert of one of them is judged to be)."""
    return {
        "currency": book.currency,
        "versions": [movement_to_list(m) for _, m in sorted(book.versions.items())],
        "folded": book.folded,
        "folded_balance": book.folded_balance,
        "folded_figures": book.folded_figures,
        "balance": None if book.balance is None else [book.balance[0], book.balance[1], at_to_list(book.balance[2])],
        "unmatched": [[v, amount, at_to_list(at)] for v, (amount, at) in sorted(book.unmatched.items())],
        "gap_reported": book.gap_reported,
    }


def wallet_from_dict(data: Data, now: float) -> WalletBook:
    balance = data["balance"]
    return WalletBook(
        currency=data["currency"],
        versions={m.version: m for m in map(movement_from_list, data["versions"])},
        folded=data["folded"],
        folded_balance=data["folded_balance"],
        folded_figures={kind: int(data["folded_figures"][kind]) for kind in FIGURE_KINDS},
        balance=None if balance is None else (balance[0], balance[1], at_from_list(balance[2])),
        unmatched={v: (amount, at_from_list(at)) for v, amount, at in data["unmatched"]},
        last_news=now,
        gap_reported=data["gap_reported"],
    )


def payment_to_dict(book: PaymentBook) -> Data:
    return {
        "created": book.created,
        "succeeded": book.succeeded,
        "failed": book.failed,
        "refunded_total": book.refunded_total,
        "refunds_requested": book.refunds_requested,
        "refunds_settled": sorted(book.refunds_settled),
        "operations": book.operations,
        "flagged": sorted(book.flagged),
        "movements": [movement_to_list(m) for m in book.movements.values()],
        "last_at": None if book.last_at is None else at_to_list(book.last_at),
        "last_occurred": _occurred_to(book.last_occurred),
        "judged": book.judged,
        "open": {invariant: v.number for invariant, v in book.open.items()},
        "given_back": book.given_back,
    }


def payment_from_dict(data: Data, now: float, violations: dict[int, Violation]) -> PaymentBook:
    """`violations` by number: a payment's open violation is the ledger's own object (a cleared
    one it no longer keeps is not open any more)."""
    return PaymentBook(
        created=data["created"],
        succeeded=data["succeeded"],
        failed=data["failed"],
        refunded_total=data["refunded_total"],
        refunds_requested=dict(data["refunds_requested"]),
        refunds_settled=set(data["refunds_settled"]),
        operations=dict(data["operations"]),
        flagged=set(data["flagged"]),
        movements={m.movement_id: m for m in map(movement_from_list, data["movements"])},
        last_at=None if data["last_at"] is None else at_from_list(data["last_at"]),
        last_occurred=_occurred_from(data["last_occurred"]),
        last_news=now,
        judged=data["judged"],
        open={inv: violations[n] for inv, n in data["open"].items() if n in violations and not violations[n].cleared},
        given_back=data["given_back"],
    )


def restore_payments(ledger: Ledger, stored: dict[str, Data], now: float) -> None:
    """Judged payments read back from the store because news names them again."""
    violations = {v.number: v for v in ledger.violations}
    for payment_id, data in stored.items():
        if payment_id not in ledger.payments:
            ledger.payments[payment_id] = payment_from_dict(data, now, violations)


def restore_wallets(ledger: Ledger, asked: list[str], stored: dict[str, Data], now: float) -> None:
    """Wallets read back from the store before events about them are added; an asked wallet
    the store does not have is new."""
    ledger.wallets.restore(asked, {wallet_id: wallet_from_dict(data, now) for wallet_id, data in stored.items()})


def ledger_to_dict(ledger: Ledger) -> Data:
    """What is open in the ledger; its evicted payments and its wallets are written apart
    (`payment_to_dict`, `wallet_to_dict`), the wallets' sums counted before (`take_dirty`)."""
    wallets = ledger.wallets
    wallets.recount()
    return {
        "format": STATE_FORMAT,
        "found": ledger.found,
        "unchecked": ledger.unchecked,
        "violations": [violation_to_dict(v) for v in ledger.violations],
        "currency_open": {currency: v.number for currency, v in ledger.currency_open.items()},
        "wallet_totals": wallets.totals,
        "latest_balance_at": None if wallets.latest_balance_at is None else at_to_list(wallets.latest_balance_at),
        "payments": {payment_id: payment_to_dict(book) for payment_id, book in ledger.payments.items()},
        "pending": sorted(ledger.pending),
        "entered": [[*key, amount, count] for key, (amount, count) in sorted(ledger.sources.entered.items())],
    }


def ledger_from_dict(data: Data, now: float) -> Ledger:
    if data.get("format") not in (1, STATE_FORMAT):
        raise ValueError(f"auditor state format {data.get('format')!r}, this code reads {STATE_FORMAT}")
    ledger = Ledger()
    ledger.found, ledger.unchecked = data["found"], data["unchecked"]
    ledger.violations = [violation_from_dict(v) for v in data["violations"]]
    by_number = {v.number: v for v in ledger.violations}
    ledger.currency_open = {currency: by_number[n] for currency, n in data["currency_open"].items()}
    if data["format"] == 1:  # every wallet inside: all in memory, written apart by the next checkpoint
        for wallet_id, w in data["wallets"].items():
            ledger.wallets.adopt(wallet_id, wallet_from_dict(w, now))
    else:
        ledger.wallets.totals = {currency: list(row) for currency, row in data["wallet_totals"].items()}
        at = data["latest_balance_at"]
        ledger.wallets.latest_balance_at = None if at is None else at_from_list(at)
    ledger.payments.update({pid: payment_from_dict(p, now, by_number) for pid, p in data["payments"].items()})
    ledger.pending = set(data["pending"])
    ledger.sources.entered = defaultdict(lambda: [0, 0], _entered(data["entered"]))
    return ledger


def _entered(rows: Iterable[list[Any]]) -> dict[tuple[str, str, str], list[int]]:
    return {(source, actor, currency): [amount, count] for source, actor, currency, amount, count in rows}
