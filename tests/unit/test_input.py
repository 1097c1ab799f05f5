"""Request input refused at the door: strict JSON, text that can be stored, strict query
numbers, webhook signature headers, and the gateway's timeout for a waiting read."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from connectors.config import GatewayConfig
from connectors.signing import sign, verify
from services.gateway import upstream_timeout_s
from services.http import MAX_WAIT_S, ApiError, Field, check, read_fields, read_query
from services.json_input import MAX_DEPTH, OVERSIZED_INT, JsonRefused, parse_json, text_problem


def refused(raw: bytes) -> JsonRefused:
    with pytest.raises(JsonRefused) as caught:
        parse_json(raw)
    return caught.value


def test_duplicate_keys_are_refused_naming_the_key_at_any_depth() -> None:
    assert (refused(b'{"amount": 1, "amount": 2}').code, refused(b'{"amount": 1, "amount": 2}').field) == (
        "duplicate_key",
        "amount",
    )
    assert refused(b'{"data": {"metadata": {"id": 1, "id": 1}}}').field == "id"


def test_nesting_past_the_limit_is_refused_before_parsing_and_brackets_in_strings_do_not_count() -> None:
    assert refused(b"[" * 50_000 + b"]" * 50_000).code == "too_deep"
    assert refused(b'{"a":' * 10_000 + b"1" + b"}" * 10_000).code == "too_deep"
    deep_enough = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert parse_json(deep_enough) == json.loads(deep_enough)
    assert refused(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)).code == "too_deep"
    bracketed = json.dumps({"note": "[{" * 1000 + '\\" [', "n": [[1]]}).encode()
    assert parse_json(bracketed)["n"] == [[1]]


def test_integers_too_long_to_be_ours_become_a_marker_the_field_check_names() -> None:
    body = parse_json(b'{"amount": ' + b"9" * 5000 + b', "small": -12}')
    assert body["amount"] is OVERSIZED_INT and body["small"] == -12
    with pytest.raises(ApiError) as caught:
        check("amount", body["amount"], Field("amount"))
    assert (caught.value.status, caught.value.field) == (422, "amount")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"a": NaN}', "malformed_json"),
        (b'{"a": -Infinity}', "malformed_json"),
        (b'{"a": "\xff\xfe"}', "invalid_encoding"),
        (b"\xef\xbb\xbf{}", "malformed_json"),  # a byte-order mark is not JSON
        (b"", "malformed_json"),
        (b'{"a": "raw\x00nul"}', "malformed_json"),  # unescaped control characters are not JSON either
    ],
)
def test_what_json_forbids_is_refused(raw: bytes, code: str) -> None:
    assert refused(raw).code == code


@pytest.mark.parametrize(
    ("value", "multiline", "problem"),
    [
        ("a\x00b", True, "the control character U+0000"),
        ("\ud800", True, "a lone surrogate"),
        ("x\udfffy", False, "a lone surrogate"),
        ("\x1b[31mred", True, "the control character U+001B"),
        ("del\x7f", True, "the control character U+007F"),
        ("c1\x85", True, "the control character U+0085"),
        ("two\nlines\r\n\tindented", True, None),
        ("two\nlines", False, "the control character U+000A"),
        ("tab\there", False, "the control character U+0009"),
        ("Café ☕ 支払い 💸", False, None),
        ("", False, None),
    ],
)
def test_text_refuses_nul_surrogates_and_controls_but_keeps_line_breaks_in_notes(
    value: str, multiline: bool, problem: str | None
) -> None:
    assert text_problem(value, multiline) == problem


def test_a_string_field_with_a_control_character_is_422_naming_the_field() -> None:
    with pytest.raises(ApiError) as caught:
        read_fields({"reference": "a\x00b"}, {"reference": Field("string")})
    assert (caught.value.status, caught.value.code, caught.value.field) == (422, "invalid_text", "reference")
    note = {"description": "line one\nline two"}
    assert read_fields(note, {"description": Field("string", multiline=True)}) == note


WEBHOOKISH = {
    "id": Field("string"),
    "created": Field("int", minimum=0, maximum=10**13),
    "data": Field(
        "object", fields={"metadata": Field("object", fields={"operation_id": Field("uuid", required=False)})}
    ),
}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"id": "e", "created": 10**20, "data": {"metadata": {}}}, 422, "created"),
        ({"id": "e", "created": -1, "data": {"metadata": {}}}, 422, "created"),
        ({"id": "e", "created": True, "data": {"metadata": {}}}, 422, "created"),
        ({"id": "e", "created": 1.5, "data": {"metadata": {}}}, 422, "created"),
        ({"id": "e", "created": 1, "data": {"metadata": {"operation_id": 7}}}, 422, "data.metadata.operation_id"),
        ({"id": "e", "created": 1, "data": {"metadata": {"operation_id": "x"}}}, 422, "data.metadata.operation_id"),
        ({"id": "e", "created": 1, "data": {"metadata": []}}, 422, "data.metadata"),
        ({"id": "e", "created": 1, "data": {}}, 400, "data.metadata"),
        ({"id": "e\x00", "created": 1, "data": {"metadata": {}}}, 422, "id"),
    ],
)
def test_nested_fields_are_checked_and_named_by_their_path(body: dict[str, Any], status: int, field: str) -> None:
    with pytest.raises(ApiError) as caught:
        read_fields(body, WEBHOOKISH, ignore_unknown=True)
    assert (caught.value.status, caught.value.field) == (status, field)


def test_unknown_fields_are_ignored_only_where_asked() -> None:
    body = {"id": "e", "created": 1, "type": "charge.succeeded", "data": {"metadata": {"payment_id": "p"}, "extra": 1}}
    assert read_fields(body, WEBHOOKISH, ignore_unknown=True)["data"] == {"metadata": {"operation_id": None}}
    with pytest.raises(ApiError) as caught:
        read_fields(body, WEBHOOKISH)
    assert caught.value.field == "type"


LIMIT = {"limit": Field("int", required=False, minimum=1, maximum=100)}
WAIT = {"wait": Field("number", required=False, minimum=0, maximum=30)}


@pytest.mark.parametrize(
    "raw", [" 5", "5 ", "+5", "\u0665", "\uff15", "1_0", "1e1", "0x5", "", "5.0", "99999999999999999999"]
)
def test_query_integers_are_plain_ascii_digits(raw: str) -> None:
    with pytest.raises(ApiError) as caught:
        read_query(make_mocked_request("GET", "/x", headers={}).clone(rel_url=f"/x?limit={raw}"), LIMIT)
    assert (caught.value.status, caught.value.field) == (422, "limit")


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e1", " 1", "1.", ".5", "\u0661"])
def test_query_numbers_are_plain_ascii_decimals(raw: str) -> None:
    with pytest.raises(ApiError):
        read_query(make_mocked_request("GET", "/x", headers={}).clone(rel_url=f"/x?wait={raw}"), WAIT)


def test_plain_query_numbers_still_read() -> None:
    request = make_mocked_request("GET", "/x?limit=25", headers={})
    assert read_query(request, LIMIT) == {"limit": 25}
    assert read_query(make_mocked_request("GET", "/x?wait=2.5", headers={}), WAIT) == {"wait": 2.5}


@pytest.mark.parametrize(
    ("timestamp", "signature", "problem"),
    [
        (" {now}", "good", "malformed timestamp"),
        ("{now}\n", "good", "malformed timestamp"),
        ("1" * 5000, "good", "malformed timestamp"),
        ("{now}", "v1=\udcff", "malformed signature"),
        ("{now}", "v1=é", "malformed signature"),
        ("{now}", "good", None),
    ],
)
def test_webhook_signature_headers_are_strict(timestamp: str, signature: str, problem: str | None) -> None:
    now, body = 1_800_000_000, b"{}"
    good = sign("secret", now, body)
    assert verify("secret", timestamp.format(now=now), good if signature == "good" else signature, body, now, 300) == (
        problem
    )


GATEWAY = GatewayConfig(
    host="127.0.0.1",
    port=1,
    payment_upstream="http://p",
    wallet_upstream="http://w",
    max_body_bytes=1024,
    upstream_timeout_s=10.0,
    rate_per_s=1.0,
    cache_entries=1,
    burst=1,
    upstream_connections=1,
    max_waits=1,
    max_waits_per_credential=1,
)


@pytest.mark.parametrize(
    ("wait", "timeout"),
    [
        (None, 10.0),
        ("0", 10.0),
        ("12", 22.0),
        ("29.5", 39.5),
        (str(MAX_WAIT_S), 10.0 + MAX_WAIT_S),
        ("1000", 10.0 + MAX_WAIT_S),  # the API refuses it at once; the cap keeps a slow one bounded
        ("nan", 10.0),
        ("inf", 10.0 + MAX_WAIT_S),
        ("-5", 10.0),
        ("soon", 10.0),
    ],
)
def test_the_gateway_waits_as_long_as_the_request_may(wait: str | None, timeout: float) -> None:
    assert upstream_timeout_s(GATEWAY, wait) == timeout
