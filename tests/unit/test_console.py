"""The console's pure logic: timelines, verdicts, hop timings, JSON lines, --since."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connectors.avro import SingleObjectCodec
from console.dlq import choose_letters
from console.entries import (
    Entry,
    entry_json,
    fmt_duration,
    format_entry,
    hops,
    is_about,
    movements_of,
    parse_since,
    summary_lines,
    timeline,
    to_entry,
    verdict,
    wallets_named,
)
from console.rebuild import diff_rows
from console.sources import ConsoleError
from streams.envelope import command_record, new_meta

PAYMENT = "p-1"
WALLET = "w-1"
MONEY = {"amount": 1_500, "currency": "USD"}


def event(event_type: str, **fields: Any) -> dict[str, Any]:
    return {"envelope": {"event_type": event_type, "occurred_at": 0, "correlation_id": PAYMENT}, **fields}


def entry(topic: str, offset: int, ts: int, key: str, ev: dict[str, Any] | None, partition: int = 0) -> Entry:
    return Entry(topic, partition, offset, ts, key, b"", ev)


def payment_flow() -> list[Entry]:
    return [
        entry("payment.success", 0, 1_134, PAYMENT, event("PaymentSucceeded", payment_id=PAYMENT, amount=MONEY)),
        entry("payment.created", 0, 1_000, PAYMENT, event("PaymentCreated", payment_id=PAYMENT, wallet_id=WALLET)),
        entry(
            "wallet.movement_updates",
            7,
            1_022,
            WALLET,
            event("MovementUpdated", payment_id=PAYMENT, movement_id="m-1", status="applied", amount=MONEY),
        ),
        entry(
            "wallet.movement_required",
            3,
            1_013,
            WALLET,
            event("MovementRequired", payment_id=PAYMENT, movement_id="m-1", amount=MONEY),
        ),
    ]


def test_the_timeline_is_in_time_order_with_each_message_once() -> None:
    flow = payment_flow()
    ordered = timeline([*flow, flow[0]])
    assert [e.event_type for e in ordered] == [
        "PaymentCreated",
        "MovementRequired",
        "MovementUpdated",
        "PaymentSucceeded",
    ]
    assert hops(ordered) == [None, 13, 9, 112]


def test_events_of_the_same_millisecond_follow_the_flow_of_a_payment() -> None:
    same = [
        entry("wallet.balance_update", 5, 10, WALLET, event("BalanceUpdated")),
        entry("wallet.movement_updates", 5, 10, WALLET, event("MovementUpdated")),
    ]
    assert [e.topic for e in timeline(same)] == ["wallet.movement_updates", "wallet.balance_update"]


def test_a_payment_with_a_terminal_event_reached_it() -> None:
    assert verdict(timeline(payment_flow())) == (True, "reached terminal PaymentSucceeded on payment.success")


def test_a_payment_without_one_says_where_it_stopped() -> None:
    stuck = timeline(payment_flow()[1:])
    assert verdict(stuck) == (False, "stopped after MovementUpdated on wallet.movement_updates, not terminal")


def test_a_refund_request_reopens_a_finished_payment() -> None:
    flow = [*payment_flow(), entry("payment.refund", 0, 2_000, PAYMENT, event("RefundRequested", payment_id=PAYMENT))]
    assert verdict(timeline(flow)) == (False, "stopped after RefundRequested on payment.refund, not terminal")


def test_a_payments_wallet_events_are_kept_only_when_they_are_about_it() -> None:
    flow = payment_flow()
    wallets, movements = wallets_named(flow, PAYMENT), movements_of(flow, PAYMENT)
    assert wallets == {WALLET} and movements == {"m-1"}
    other = entry("wallet.movement_updates", 8, 1_050, WALLET, event("MovementUpdated", payment_id="p-2"))
    balance = entry("wallet.balance_update", 2, 1_023, WALLET, event("BalanceUpdated", movement_id="m-1"))
    assert [is_about(e, PAYMENT, wallets, movements) for e in (*flow, other, balance)] == [True] * 4 + [False, True]


def test_a_line_shows_hop_place_type_fields_and_correlation() -> None:
    line = format_entry(payment_flow()[2], 9)
    assert "+9 ms" in line and "wallet.movement_updates[0]@7" in line and "MovementUpdated" in line
    assert "status=applied amount=1500 USD movement_id=m-1" in line and f"corr={PAYMENT}" in line


def test_a_failed_payment_line_shows_its_reason() -> None:
    failed = entry(
        "payment.failed",
        1,
        5,
        PAYMENT,
        event("PaymentFailed", payment_id=PAYMENT, reason_code="insufficient_funds", reason="too poor"),
    )
    assert "reason_code=insufficient_funds reason=too poor" in format_entry(failed, None)


def test_hops_are_readable_at_every_scale() -> None:
    assert [fmt_duration(ms) for ms in (12, 1_234, 125_000)] == ["12 ms", "1.234 s", "2 min 5.0 s"]


def test_json_lines_hex_encode_bytes_and_carry_the_hop() -> None:
    letter = entry(
        "payment.dlq",
        4,
        9,
        WALLET,
        event(
            "DeadLetter",
            key=b"w-1",
            value=b"\x00\xff",
            error_type="E",
            error_message="bad",
            source_topic="t",
            source_partition=1,
            source_offset=2,
            consumer="c",
        ),
    )
    record = json.loads(entry_json(letter, 3))
    assert record["hop_ms"] == 3 and record["event"]["value"] == "00ff" and record["event"]["key"] == "772d31"
    assert record["details"]["reason"] == "E: bad" and record["details"]["source"] == "t[1]@2"


def test_undecodable_bytes_become_an_entry_with_the_error_not_a_crash() -> None:
    bad = to_entry(SingleObjectCodec(), "wallet.movement_required", 0, 1, 5, b"k", b"\xc3\x01garbage!!", [])
    assert bad.event is None and "fingerprint" in (bad.error or "")
    assert json.loads(entry_json(bad, None))["value_hex"] == b"\xc3\x01garbage!!".hex()
    assert "<undecodable>" in format_entry(bad, None)


def test_the_traceparent_header_gives_the_trace_id_and_its_absence_is_fine() -> None:
    codec = SingleObjectCodec()
    value = codec.encode(
        command_record(
            "BalanceUpdated", new_meta(), wallet_id=WALLET, user_id="u", balance=MONEY, version=1, movement_id=None
        )
    )
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    header = [("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01".encode())]
    assert to_entry(codec, "wallet.balance_update", 0, 0, 0, b"w", value, header).trace_id == trace_id
    assert to_entry(codec, "wallet.balance_update", 0, 0, 0, b"w", value, []).trace_id is None


def test_a_summary_gives_the_duration_and_the_verdict() -> None:
    lines = summary_lines(PAYMENT, timeline(payment_flow()))
    assert lines == [
        "4 events on 4 topics over 134 ms",
        f"payment {PAYMENT}: reached terminal PaymentSucceeded on payment.success",
    ]
    assert summary_lines(WALLET, [])[0].startswith("no events about w-1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5m", 1_000_000 - 300_000),
        ("30s", 1_000_000 - 30_000),
        ("250ms", 1_000_000 - 250),
        ("1h", 1_000_000 - 3_600_000),
        ("2024-01-01T00:00:00Z", 1_704_067_200_000),
        ("2024-01-01T00:00:00", 1_704_067_200_000),
        ("2024-01-01T01:00:00+01:00", 1_704_067_200_000),
    ],
)
def test_since_takes_a_duration_ago_or_an_iso_time(text: str, expected: int) -> None:
    assert parse_since(text, now_ms=1_000_000) == expected


def test_since_refuses_anything_else_saying_what_it_takes() -> None:
    with pytest.raises(ValueError, match="30s, 5m"):
        parse_since("yesterday")


def test_dead_letters_are_chosen_by_offset_and_an_ambiguous_one_needs_a_partition() -> None:
    letters = [
        entry("payment.dlq", 3, 0, WALLET, None, partition=0),
        entry("payment.dlq", 3, 0, WALLET, None, 1),
        entry("payment.dlq", 4, 0, WALLET, None, partition=1),
    ]
    assert choose_letters(letters, [4], None) == [letters[2]]
    assert choose_letters(letters, [3], 1) == [letters[1]]
    with pytest.raises(ConsoleError, match="--partition"):
        choose_letters(letters, [3], None)
    with pytest.raises(ConsoleError, match="dlq list"):
        choose_letters(letters, [9], None)


def test_view_differences_are_matched_on_the_primary_key() -> None:
    live = [{"id": 1, "balance": 10}, {"id": 2, "balance": 5}]
    rebuilt = [{"id": 1, "balance": 11}, {"id": 3, "balance": 7}]
    assert diff_rows("wallets", ["id"], live, rebuilt) == [
        "wallets id=1 differs: balance: live=10 rebuilt=11",
        "wallets id=2 is in the live view but not in the log's rebuild",
        "wallets id=3 is in the rebuild but missing from the live view",
    ]
