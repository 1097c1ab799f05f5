"""The money auditor's ledger: a second witness that rebuilds the books from the events
on the log and checks them, without the workers' decision code (it imports only how
ids are named), so a bug in a worker cannot hide itself here.

Events are the decoded Avro records (plain dicts); each comes with its coordinates on
the log, which every violation names. Time is passed in (monotonic seconds), so the
ledger stays pure.

Invariants:
- balance_never_negative: no applied movement and no balance update below zero.
- balance_equals_movements: per wallet, each applied movement's balance_after is the
  previous one plus its amount (from zero, version by version), and every balance
  update equals the movement at its version.
- currency_totals: per currency, the wallets' balances equal openings plus incomes
  minus expenses (over wallets whose history is complete).
- payment_matches_movements: a wallet payment's debits minus its credits (refunds,
  compensation, and any revert of its movements) equal its amount minus its refunded
  amount once it succeeded, and zero otherwise.
- money_has_a_source: every applied income names the source its ids say it is (an opening,
  an operator's movement, a payment's refund or compensation), given by an actor allowed to
  give it, and a payment gives back no more than its debit in that wallet took
  (domain.audit_sources, which also counts the money entered per source, actor and currency).
- provider_matches_payment: every provider operation that succeeded has the currency
  and amount its payment asked for (unless the saga flagged it inconsistent), and what
  the provider kept equals the amount minus the refunded amount (zero if it failed).

Payments are judged when terminal with nothing in flight and quiet for `quiet_s`, or
after `grace_s` without news whatever their state; news after a judgment judges again,
and a violation that the saga's later events settle is marked cleared.

Only what is open stays in memory: a judged payment leaves `payments` for `evicted`, which
the auditor writes to its store with the next checkpoint and reads back (domain.audit_state.restore_payments) when news
names it again (`wanted`); a wallet's movements are folded into running figures once their
balance update is read, and those figures live in the store too, with only some wallets in
memory (domain.audit_wallets: the auditor reads the others back before adding events about
them, `wallets_wanted`); cleared violations beyond the RECENT_CLEARED latest are dropped. What
folding gives up: a movement claiming a version folded and no longer kept is not compared
(a redelivery looks the same), nor is a revert of such a movement attributed to its payment.
"""

from __future__ import annotations

from collections import defaultdict

from domain.audit_books import INVARIANTS, At, Event, Movement, PaymentBook, Violation, WalletBook
from domain.audit_sources import MoneySources
from domain.audit_wallets import Wallets
from domain.payment import charge_operation_id, compensation_operation_id, refund_operation_id

RECENT_CLEARED = 200  # cleared violations kept for the page, the latest ones
PAYMENT_EVENTS = frozenset(
    {
        "PaymentCreated",
        "PaymentSucceeded",
        "PaymentFailed",
        "RefundRequested",
        "PaymentRefunded",
        "RefundFailed",
        "PaymentOperationCompleted",
        "PaymentOperationInconsistent",
    }
)


class Ledger:
    def __init__(self) -> None:
        self.wallets = Wallets()
        self.payments: dict[str, PaymentBook] = defaultdict(PaymentBook)
        self.evicted: dict[str, PaymentBook] = {}  # judged, not written to the store yet
        self.violations: list[Violation] = []
        self.found = 0  # violations ever found (numbers them)
        self.currency_open: dict[str, Violation] = {}
        self.pending: set[str] = set()  # payments with news not judged yet
        self.sources = MoneySources()
        self.unchecked = 0  # movements and updates at versions folded and no longer kept

    # ------------------------------------------------------------ what stays in memory

    def wanted(self, event: Event) -> str | None:
        """The payment this event needs the book of, if it is neither in memory nor new."""
        kind = event["envelope"]["event_type"]
        if kind in PAYMENT_EVENTS or kind == "MovementUpdated":
            payment_id = event.get("payment_id")
            wallet = self.wallets.get(event["wallet_id"]) if kind == "MovementUpdated" else None
            if payment_id is None and wallet is not None:
                payment_id = self._owner_of_reverted(wallet, event)
            if payment_id is not None and payment_id not in self.payments:
                revived = self.evicted.pop(payment_id, None)
                if revived is None:
                    return str(payment_id)
                self.payments[payment_id] = revived
        return None

    @staticmethod
    def wallets_wanted(event: Event) -> str | None:
        """The wallet whose book must be in memory before this event is added."""
        kind = event["envelope"]["event_type"]
        return event["wallet_id"] if kind in ("MovementUpdated", "BalanceUpdated") else None

    def written(self, books: dict[str, PaymentBook]) -> None:
        """These evicted books are in the store now (unless revived and judged again since)."""
        for payment_id, book in books.items():
            if self.evicted.get(payment_id) is book:
                del self.evicted[payment_id]

    # ------------------------------------------------------------ reading the log

    def add(self, event: Event, at: At, now: float) -> None:
        """Read one event; each type the auditor cares about has its `_on_<EventType>`."""
        kind = event["envelope"]["event_type"]
        self.wanted(event)  # brings back a book judged since the last checkpoint
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(event, at, now)

    def _payment(self, event: Event, at: At, now: float) -> PaymentBook:
        book = self.payments[event["payment_id"]]
        # A payment's events span topics, and the order they are read in across topics is not
        # the order they happened in: a violation names the latest event of the story, by time.
        occurred = event["envelope"].get("occurred_at")
        if occurred is None or book.last_occurred is None or occurred >= book.last_occurred:
            book.last_at, book.last_occurred = at, occurred
        book.last_news, book.judged = now, False
        self.pending.add(event["payment_id"])
        return book

    def _on_MovementUpdated(self, event: Event, at: At, now: float) -> None:
        movement_id = event["movement_id"]
        if event["status"] != "applied":
            return  # rejections move nothing
        amount = event["amount"]["amount"]
        movement = Movement(
            movement_id,
            event["wallet_id"],
            amount if event["type"] == "income" else -amount,
            event["amount"]["currency"],
            event["wallet_version"],
            event["balance_after"],
            event["payment_id"],
            at,
        )
        book = self.wallets.touch(movement.wallet_id)
        known = book.versions.get(movement.version)
        if known is not None and known.movement_id == movement_id:
            return  # a redelivered outcome repeats one already read
        if book.forgotten(movement.version):
            self.unchecked += 1  # a redelivery of a folded movement, or a claim it cannot compare
            return
        if movement.delta > 0:
            payment = self.payments.get(movement.payment_id) if movement.payment_id else None
            problem = self.sources.admit(event, movement, payment)
            if problem is not None:
                self._report("money_has_a_source", movement.wallet_id, problem, at)
        book.currency, book.last_news = book.currency or movement.currency, now
        if movement.balance_after < 0:
            self._report(
                "balance_never_negative",
                movement.wallet_id,
                f"movement {movement_id} left balance {movement.balance_after} {movement.currency}",
                at,
            )
        if movement.version in book.versions:
            self._report(
                "balance_equals_movements",
                movement.wallet_id,
                f"movements "
                f"{book.versions[movement.version].movement_id} and {movement_id} both claim version "
                f"{movement.version}",
                at,
            )
            return
        book.versions[movement.version] = movement
        self._check_chain(book, movement.version)
        self._check_chain(book, movement.version + 1)
        pending = book.unmatched.pop(movement.version, None)
        if pending is not None:
            self._check_update(movement.wallet_id, book, movement.version, *pending)
        owner = movement.payment_id or self._owner_of_reverted(book, event)
        if owner is not None:
            payment = self.payments[owner]
            payment.movements[movement_id] = movement
            payment.last_news, payment.judged = now, False
            self.pending.add(owner)
        book.fold(book.opening_id)

    @staticmethod
    def _owner_of_reverted(book: WalletBook, event: Event) -> str | None:
        reverted = event.get("reverts_movement_id")
        found = next((m for m in book.versions.values() if m.movement_id == reverted), None) if reverted else None
        return found.payment_id if found is not None else None

    def _check_chain(self, book: WalletBook, version: int) -> None:
        movement = book.versions.get(version)
        before = book.balance_at(version - 1)
        if movement is None or before is None:
            return
        if movement.balance_after != before + movement.delta:
            self._report(
                "balance_equals_movements",
                movement.wallet_id,
                f"movement {movement.movement_id} "
                f"v{version} says balance {movement.balance_after}, but v{version - 1} left {before} "
                f"and it moves {movement.delta:+d}",
                movement.at,
            )

    def _on_BalanceUpdated(self, event: Event, at: At, now: float) -> None:
        wallet_id, version, amount = event["wallet_id"], event["version"], event["balance"]["amount"]
        book = self.wallets.touch(wallet_id)
        book.currency, book.last_news = book.currency or event["balance"]["currency"], now
        if amount < 0:
            self._report("balance_never_negative", wallet_id, f"balance update v{version} says {amount}", at)
        if book.balance is None or version > book.balance[0]:
            book.balance = (version, amount, at)
            self.wallets.balance_read(at)
        if book.forgotten(version):
            self.unchecked += 1
        elif version == 0 or version in book.versions:
            self._check_update(wallet_id, book, version, amount, at)
        else:
            book.unmatched[version] = (amount, at)
        book.fold(book.opening_id)

    def _check_update(self, wallet_id: str, book: WalletBook, version: int, amount: int, at: At) -> None:
        expected = book.balance_at(version)
        if amount != expected:
            self._report(
                "balance_equals_movements",
                wallet_id,
                f"balance update v{version} says {amount}, the movement at v{version} left {expected}",
                at,
            )

    def _on_PaymentCreated(self, event: Event, at: At, now: float) -> None:
        book = self._payment(event, at, now)
        book.created = book.created or {"method": event["method"], "amount": event["amount"]}

    def _on_PaymentSucceeded(self, event: Event, at: At, now: float) -> None:
        self._payment(event, at, now).succeeded = True

    def _on_PaymentFailed(self, event: Event, at: At, now: float) -> None:
        self._payment(event, at, now).failed = True

    def _on_RefundRequested(self, event: Event, at: At, now: float) -> None:
        self._payment(event, at, now).refunds_requested.setdefault(event["refund_id"], event["amount"]["amount"])

    def _on_PaymentRefunded(self, event: Event, at: At, now: float) -> None:
        book = self._payment(event, at, now)
        book.refunds_settled.add(event["refund_id"])
        book.refunded_total = max(book.refunded_total, event["refunded_total"]["amount"])

    def _on_RefundFailed(self, event: Event, at: At, now: float) -> None:
        self._payment(event, at, now).refunds_settled.add(event["refund_id"])

    def _on_PaymentOperationCompleted(self, event: Event, at: At, now: float) -> None:
        kept = {k: event.get(k) for k in ("kind", "source", "status", "amount")}
        self._payment(event, at, now).operations.setdefault(event["operation_id"], kept)

    def _on_PaymentOperationInconsistent(self, event: Event, at: At, now: float) -> None:
        self._payment(event, at, now).flagged.add(event["operation_id"])

    # ------------------------------------------------------------ judging

    def judge(self, now: float, quiet_s: float, grace_s: float) -> None:
        self.judge_payments(now, quiet_s, grace_s)
        self._judge_wallets(now, grace_s)
        self._judge_currencies()
        self._forget_cleared()

    def judge_payments(self, now: float, quiet_s: float, grace_s: float) -> None:
        """The payments quiet long enough, judged and let go of (to `evicted`)."""
        for payment_id in list(self.pending):
            book = self.payments[payment_id]
            if book.created is None or book.last_at is None:
                continue
            quiet = now - book.last_news
            if (self._settled(book) and quiet >= quiet_s) or quiet >= grace_s:
                self._judge_payment(payment_id, book)
                book.judged = True
                self.pending.discard(payment_id)
                self.evicted[payment_id] = self.payments.pop(payment_id)

    def _judge_wallets(self, now: float, grace_s: float) -> None:
        self.wallets.recount()
        for wallet_id in sorted(self.wallets.gapped):  # the others have no gap to report
            wallet = self.wallets[wallet_id]
            quiet = now - wallet.last_news >= grace_s
            gap = None if wallet.gap_reported or wallet.unbroken() or not quiet else wallet.gap()
            if gap is not None:
                self.wallets.gap_reported(wallet_id)
                version, at = gap
                self._report(
                    "balance_equals_movements",
                    wallet_id,
                    f"no applied movement at v{version} {grace_s:.0f}s after later versions",
                    at,
                )

    def _forget_cleared(self) -> None:
        cleared = [v for v in self.violations if v.cleared]
        if len(cleared) > RECENT_CLEARED:
            dropped = {id(v) for v in cleared[: len(cleared) - RECENT_CLEARED]}
            self.violations = [v for v in self.violations if id(v) not in dropped]

    def _settled(self, book: PaymentBook) -> bool:
        """Terminal, with no refund and no movement the saga has not finished with."""
        if not (book.succeeded or book.failed):
            return False
        if set(book.refunds_requested) - book.refunds_settled:
            return False
        return all(m in book.operations for m, movement in book.movements.items() if movement.payment_id is not None)

    def _judge_payment(self, payment_id: str, book: PaymentBook) -> None:
        assert book.created is not None and book.last_at is not None
        found = {
            "payment_matches_movements": self._movement_problem(book),
            "provider_matches_payment": self._provider_problem(payment_id, book),
        }
        for invariant, problem in found.items():
            previous = book.open.pop(invariant, None)
            if problem is None:
                if previous is not None:
                    previous.cleared = True  # the saga was slow, not wrong: later events settled it
                continue
            if previous is not None and previous.message == problem:
                book.open[invariant] = previous
                continue
            if previous is not None:
                previous.cleared = True
            book.open[invariant] = self._report(invariant, payment_id, f"payment {payment_id}: {problem}", book.last_at)

    def _expected_kept(self, book: PaymentBook) -> int:
        assert book.created is not None
        return book.created["amount"]["amount"] - book.refunded_total if book.succeeded and not book.failed else 0

    def _movement_problem(self, book: PaymentBook) -> str | None:
        assert book.created is not None
        if book.created["method"] != "wallet":
            return None if not book.movements else f"an external payment moved wallet money ({len(book.movements)})"
        debits = [m for m in book.movements.values() if m.delta < 0 and m.payment_id is not None]
        net = sum(m.delta for m in book.movements.values())
        kept = self._expected_kept(book)
        if -net != kept or len(debits) > 1:
            state = "succeeded" if book.succeeded else "failed" if book.failed else "not terminal"
            return (
                f"{state}, amount {book.created['amount']['amount']} refunded {book.refunded_total}, but its "
                f"wallet movements took {-net} ({len(debits)} debit(s), {len(book.movements)} movement(s))"
            )
        return None

    def _provider_problem(self, payment_id: str, book: PaymentBook) -> str | None:
        assert book.created is not None
        if book.created["method"] != "external":
            return None
        money = book.created["amount"]
        charge_id = charge_operation_id(payment_id, "external")
        charge = book.operations.get(charge_id)
        charged = charge is not None and charge["source"] == "provider" and charge["status"] == "succeeded"
        asked = {
            charge_id: money,
            # A compensation gives back what the provider says it took, in its currency.
            compensation_operation_id(payment_id): charge["amount"] if charge is not None and charged else money,
            **{refund_operation_id(r): {**money, "amount": amount} for r, amount in book.refunds_requested.items()},
        }
        kept: dict[str, int] = defaultdict(int)
        for op_id, op in book.operations.items():
            if op["source"] != "provider" or op["status"] != "succeeded":
                continue
            moved = op["amount"]
            if op_id not in book.flagged and moved != asked.get(op_id):
                wanted = f"{asked[op_id]['amount']} {asked[op_id]['currency']}" if op_id in asked else "nothing"
                return f"provider {op['kind']} {op_id} moved {moved['amount']} {moved['currency']}, asked {wanted}"
            kept[moved["currency"]] += moved["amount"] if op["kind"] == "charge" else -moved["amount"]
        expected = {money["currency"]: self._expected_kept(book)}
        for currency in sorted(set(kept) | set(expected)):
            if kept.get(currency, 0) != expected.get(currency, 0):
                return f"the provider kept {kept.get(currency, 0)} {currency}, expected {expected.get(currency, 0)}"
        return None

    def _judge_currencies(self) -> None:
        totals = self.currency_totals()
        for currency, figures in totals.items():
            problem = figures["balances"] != figures["openings"] + figures["incomes"] - figures["expenses"]
            previous = self.currency_open.get(currency)
            if problem and previous is None:
                message = (
                    f"{currency}: balances {figures['balances']} != openings {figures['openings']} + incomes "
                    f"{figures['incomes']} - expenses {figures['expenses']}"
                )
                self.currency_open[currency] = self._report("currency_totals", currency, message, self._last_at())
            elif not problem and previous is not None:
                previous.cleared = True
                del self.currency_open[currency]

    def currency_totals(self) -> dict[str, dict[str, int]]:
        """Per currency, over wallets whose history up to their latest balance is complete."""
        return self.wallets.currency_totals()

    def _last_at(self) -> At:
        return self.wallets.latest_balance_at or At("", 0, 0)

    # ------------------------------------------------------------ reporting

    def _report(self, invariant: str, subject: str, message: str, at: At) -> Violation:
        self.found += 1
        violation = Violation(invariant, subject, message, at, number=self.found)
        self.violations.append(violation)
        return violation

    def open_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(INVARIANTS, 0)
        for v in self.violations:
            counts[v.invariant] += not v.cleared
        return counts

    def unjudged(self) -> int:
        return sum(1 for p in self.pending if self.payments[p].created is not None)
