"""The gateway's path canonicaliser, credential headers, wait detection and wait slots."""

from __future__ import annotations

import pytest

from services.gateway import route_label
from services.gateway_rules import WaitSlots, asks_to_wait, canonical_path, encoded_path, single_header
from services.http import ApiError

PAYMENT = "/api/v1/payments/6f1c1a52-2d7e-4b8e-9a39-0b1f3c9f0f11"


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (PAYMENT, PAYMENT),
        ("/api/v1/webhooks/simulator", "/api/v1/webhooks/simulator"),
        ("/%61pi/v1/wallets", "/api/v1/wallets"),  # an unreserved letter, decoded once
        ("/api/v1/wallet/a:b@c~d", "/api/v1/wallet/a:b@c~d"),
    ],
)
def test_a_plain_path_is_its_own_canonical_form_and_is_forwarded_unchanged(raw: str, canonical: str) -> None:
    assert canonical_path(raw) == canonical
    assert encoded_path(canonical) == canonical
    assert canonical_path(encoded_path(canonical)) == canonical  # forwarded, it reads the same upstream


@pytest.mark.parametrize(
    "raw",
    [
        "/api/v1/webhooks/%2e%2e/%2e%2e/%2e%2e/metrics",
        "/api/v1/webhooks/%2E%2E/payments/x",
        "/api/v1/webhooks/.%2e/metrics",
        "/api/v1/webhooks/../metrics",
        "/api/v1/payments/./x",
        "/api/v1/payments/.",
        "/api/v1/webhooks/a%2fb",
        "/api/v1/webhooks/a%2Fb",
        "/api/v1/webhooks/a%5cb",
        "/api/v1/webhooks/a%5Cb",
        "/api/v1/webhooks\\..\\metrics",
        "/api/v1/payments/%00",
        "/api/v1/payments/a%0ab",
        "/api/v1/payments/a%7f",
        "/api/v1/payments/a\x00b",
        "/api/v1/payments/a\tb",
        "/api/v1/payments/a b",
        "/api/v1/payments/%252e%252e",  # decoded twice somewhere, it would be ..
        "/api/v1/payments/%zz",
        "/api/v1/payments/%2",
        "/api/v1/payments/%c3%a9",  # é: outside the segment characters
        "/api/v1/payments/%ff",  # not UTF-8
        "/api/v1/payments/é",
        "/api//v1/payments",
        "/api/v1/payments/",
        "*",
        "api/v1/payments",
        "",
    ],
)
def test_every_path_that_could_be_read_two_ways_is_refused_naming_the_path(raw: str) -> None:
    with pytest.raises(ApiError) as refused:
        canonical_path(raw)
    assert (refused.value.status, refused.value.code, refused.value.field) == (400, "invalid_path", "path")


def test_a_credential_header_sent_twice_is_refused_and_once_is_taken() -> None:
    assert single_header([], "Authorization") is None
    assert single_header(["Bearer a"], "Authorization") == "Bearer a"
    with pytest.raises(ApiError) as refused:
        single_header(["Bearer a", "Bearer b"], "Authorization")
    assert (refused.value.status, refused.value.field) == (400, "Authorization")


@pytest.mark.parametrize(
    ("waits", "parks"),
    [
        ([], False),
        (["0"], False),
        (["0.0"], False),
        (["00"], False),
        (["1"], True),
        (["0", "25"], True),
        (["abc"], True),
        ([""], True),
        (["-1"], True),
    ],
)
def test_anything_but_a_plain_zero_wait_counts_as_a_long_poll(waits: list[str], parks: bool) -> None:
    assert asks_to_wait(waits) is parks


def test_wait_slots_bound_each_credential_and_the_whole_gateway() -> None:
    slots = WaitSlots(per_credential=2, total=3)
    assert slots.take("a") is None and slots.take("a") is None
    mine = slots.take("a")
    assert mine is not None and (mine.status, mine.code, mine.headers["Retry-After"]) == (429, "too_many_waits", "1")
    assert slots.take("b") is None
    full = slots.take("c")
    assert full is not None and (full.status, full.code) == (503, "overloaded")
    assert slots.parked == 3
    slots.give_back("a")
    assert slots.take("c") is None and slots.parked == 3
    for credential in ("a", "b", "c"):
        slots.give_back(credential)
    assert slots.parked == 0 and slots.held == {}


@pytest.mark.parametrize(
    ("path", "label"),
    [(PAYMENT, "/api/v1/payments"), ("/api/v1/wallets", "/api/v1/wallets"), ("/api/v1/x" * 50, "unrouted")],
)
def test_metrics_label_a_path_by_its_api_family(path: str, label: str) -> None:
    assert route_label(path) == label
