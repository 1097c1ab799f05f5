"""Property-based fuzzing of both services from their own OpenAPI documents (schemathesis),
valid and invalid requests alike, with a fixed, derandomized budget: no request gets a 5xx,
and no refused request publishes a command."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import schemathesis
import stripe
import yarl
from confluent_kafka import Consumer, TopicPartition
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from connectors.auth import issue_token
from connectors.avro import SingleObjectCodec
from connectors.config import Config
from connectors.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from connectors.stripe_secrets import load_stripe_secrets
from connectors.topics import (
    EXTERNAL_PROVIDER_EVENTS,
    PAYMENT_CREATED,
    PAYMENT_REFUND_REQUESTED,
    WALLET_BALANCE_UPDATE,
    WALLET_MOVEMENT_REQUIRED,
    WALLET_MOVEMENT_UPDATES,
)
from tests.conftest import ensure_running
from tests.integration.test_payment_service import payment_in, wallet_balance
from tests.support import Api
from tests.support.kafka import reader

# Every command the fuzzer's requests publish carries this actor, so its events are told apart
# from those of the saga still finishing earlier tests' payments.
FUZZ_SUBJECT = f"fuzz-{uuid.uuid4()}"
COMMAND_TOPICS = [
    WALLET_MOVEMENT_REQUIRED.name,
    PAYMENT_CREATED.name,
    PAYMENT_REFUND_REQUESTED.name,
    EXTERNAL_PROVIDER_EVENTS.name,
]
# The wallet worker's outcomes: a refusal it decides (say, a replayed opening) is published
# as a command, so what must not appear then is an outcome that changed a wallet.
OUTCOME_TOPICS = [WALLET_MOVEMENT_UPDATES.name, WALLET_BALANCE_UPDATE.name]
BUDGET = settings(
    max_examples=50, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
codec = SingleObjectCodec()


class CommandLog:
    """End offsets of the command topics, and what was appended between two readings."""

    def __init__(self, config: Config) -> None:
        # Read as the console, whose groups are named console-*; assigned, so the group commits nothing.
        self.consumer = Consumer(
            {**reader(config).confluent(), "group.id": f"console-fuzz-{uuid.uuid4()}", "enable.auto.commit": False}
        )
        self.partitions = [(t, p) for t in COMMAND_TOPICS + OUTCOME_TOPICS for p in range(config.kafka.partitions)]

    def ends(self) -> dict[tuple[str, int], int]:
        return {
            (t, p): self.consumer.get_watermark_offsets(TopicPartition(t, p), timeout=5)[1] for t, p in self.partitions
        }

    def appended(self, before: dict[tuple[str, int], int], after: dict[tuple[str, int], int]) -> list[dict[str, Any]]:
        grown = [TopicPartition(t, p, before[t, p]) for (t, p) in after if after[t, p] > before[t, p]]
        if not grown:
            return []
        self.consumer.assign(grown)
        wanted = sum(after[tp.topic, tp.partition] - tp.offset for tp in grown)
        events = []
        while len(events) < wanted:
            message = self.consumer.poll(5)
            assert message is not None, "appended messages could not be read back"
            if message.error() is None and message.offset() < after[message.topic(), message.partition()]:
                events.append({**codec.decode(message.value()), "_topic": message.topic()})
        self.consumer.unassign()
        return events

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture(scope="module")
def command_log(payment_system: Config) -> Iterator[CommandLog]:
    log = CommandLog(payment_system)
    yield log
    log.close()


def service_schema(config: Config, port: int) -> Any:
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
    # An admin reaches every operation; the role tests cover the narrower roles.
    schema.config.update(headers={"Authorization": f"Bearer {issue_token(config.auth, FUZZ_SUBJECT, ['admin'])}"})
    return schema


def check(case: Any, command_log: CommandLog) -> None:
    before = command_log.ends()
    response = case.call(timeout=30)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    if response.status_code < 400:
        return
    error = response.json()["error"]
    # Refused by the API itself (credentials, roles, a named field, size): nothing may be
    # published. Refused by the wallet worker: the command is on the log, but no wallet changed.
    by_the_api = error["field"] is not None or response.status_code in (400, 401, 403, 413)
    new = command_log.appended(before, command_log.ends())
    hook_id = case.body.get("id") if isinstance(case.body, dict) else None

    def caused_by_this_request(event: dict[str, Any]) -> bool:
        if event["envelope"]["event_type"] == "ProviderUpdate":
            return event["provider_event_id"] == str(hook_id)
        if event["envelope"]["actor_subject"] != FUZZ_SUBJECT:
            return False
        if by_the_api:
            return True
        return event["_topic"] in OUTCOME_TOPICS and event.get("status") != "rejected"

    leaked = [e for e in new if caused_by_this_request(e)]
    assert not leaked, f"refused with {response.status_code} {error} yet published {leaked}"


def fuzz(schema: Any, command_log: CommandLog) -> int:
    """Every operation, valid and invalid requests; the number of operations fuzzed."""
    # Driven by hand rather than by schemathesis' pytest plugin, whose lazy loader does not
    # run on pytest 9.
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @BUDGET
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                check(case, command_log)

            run()
    return len(operations)


def test_wallet_api_survives_fuzzing(payment_system: Config, command_log: CommandLog) -> None:
    assert fuzz(service_schema(payment_system, payment_system.wallet_api.port), command_log) == 6


def test_payment_api_survives_fuzzing(payment_system: Config, command_log: CommandLog) -> None:
    # Create, search, get, refund, and the two webhooks (the simulator's and Stripe's).
    assert fuzz(service_schema(payment_system, payment_system.payment_api.port), command_log) == 6


# ---------------------------------------------------------------- hostile shapes, on every operation
#
# What schemathesis does not send: bytes that are not the JSON the document describes. Each
# shape must be refused (the status, code and field are asserted, so a shape that slipped past
# validation and was refused later for another reason still fails), directly and through the
# gateway, and nothing may be published.

HOSTILE_TEXT = ["a\x00b", "\ud800", "bell\x07", "esc\x1b[2J", "del\x7f", "c1\x85", "\udfff tail"]
HOSTILE_QUERY_NUMBERS = [" 5", "5 ", "\u0665", "1_0", "1e1", "nan", "inf", "0x1", "9" * 40]
HOSTILE_PATH_IDS = ["%00", "%ED%A0%80", "%FF", "%20{id}", "{id}%00"]
HUGE = "9" * 5000
HUGE_MARK = "\x00huge\x00"


@dataclass(frozen=True)
class Shape:
    """One hostile request to an operation, and the refusal it must get."""

    what: str
    status: int
    field: str | None
    code: str | None = None  # None: any code
    body: bytes | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    path: str | None = None  # percent-encoded path and query, when not the operation's own


@dataclass(frozen=True)
class Resources:
    """Real ids, so that a shape that slipped past validation would reach real aggregates."""

    ids: dict[str, str]
    wallet_id: str
    payment_id: str


@pytest.fixture(scope="module")
async def resources(payment_system: Config, wallet_api: Api, payment_api: Api) -> Resources:
    user = str(uuid.uuid4())
    status, wallet = await wallet_api.post("/api/v1/wallets", {"user_id": user, "currency": "USD"})
    assert status == 201, wallet
    income = {"type": "income", "amount": 1_000, "currency": "USD"}
    status, movement = await wallet_api.post(f"/api/v1/wallet/{wallet['id']}/movement", income)
    assert status == 201, movement
    status, paid = await payment_api.post(
        "/api/v1/payments",
        {"user_id": user, "amount": 10, "currency": "USD", "payment_method_type": "wallet", "wallet_id": wallet["id"]},
    )
    assert status == 201 and paid["status"] == "completed", paid
    # The views trail the log: the snapshots taken before and after the fuzzing must not see them move.
    await wallet_balance(wallet_api, wallet["id"], 990)
    await payment_in(payment_api, paid["id"], "completed")
    ids = {
        "wallet_id": wallet["id"],
        "movement_id": movement["id"],
        "payment_id": paid["id"],
        "provider": payment_system.provider.name,
    }
    return Resources(ids, wallet["id"], paid["id"])


def json_type(schema: dict[str, Any]) -> str:
    """The type of a value (OpenAPI 3.1 writes an optional one as [type, "null"])."""
    kind = schema["type"]
    return kind if isinstance(kind, str) else next(k for k in kind if k != "null")


def valid_value(schema: dict[str, Any]) -> Any:
    if "enum" in schema:
        return "USD" if "USD" in schema["enum"] else schema["enum"][0]
    if json_type(schema) == "object":
        return {name: valid_value(s) for name, s in schema["properties"].items()}
    if json_type(schema) == "integer":
        return int(schema.get("minimum", 1))
    return str(uuid.uuid4()) if schema.get("format") == "uuid" else "fine"


def leaves(schema: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(dotted name, schema) of every field that is not an object."""
    found = []
    for name, field in schema["properties"].items():
        if json_type(field) == "object":
            found += leaves(field, f"{prefix}{name}.")
        else:
            found.append((prefix + name, field))
    return found


def replaced(body: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(body))
    *parents, last = dotted.split(".")
    target = copy
    for name in parents:
        target = target[name]
    target[last] = value
    return copy


def encoded(body: dict[str, Any]) -> bytes:
    return json.dumps(body).replace(json.dumps(HUGE_MARK), HUGE).encode()


JSON_TYPE = {"Content-Type": "application/json"}


def body_shapes(schema: dict[str, Any], base: dict[str, Any]) -> list[Shape]:
    first, valid = next(iter(base)).encode(), json.dumps(base).encode()
    shapes = []
    for name, field in leaves(schema):
        huge = encoded(replaced(base, name, HUGE_MARK))
        shapes.append(Shape(f"huge integer in {name}", 422, name, "invalid_value", huge, JSON_TYPE))
        if json_type(field) == "string" and "format" not in field and "enum" not in field:
            for text in HOSTILE_TEXT:
                bad = encoded(replaced(base, name, text))
                shapes.append(Shape(f"{text!r} in {name}", 422, name, "invalid_text", bad, JSON_TYPE))
    deep = b'{"' + first + b'": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    return [
        *shapes,
        Shape("duplicate key", 400, first.decode(), "duplicate_key", b'{"' + first + b'": 1, ' + valid[1:], JSON_TYPE),
        Shape("deep array", 400, None, "too_deep", deep, JSON_TYPE),
        Shape("deep object", 400, None, "too_deep", b'{"a": ' * 5_000 + b"1" + b"}" * 5_000, JSON_TYPE),
        Shape("invalid UTF-8", 400, None, "invalid_encoding", b'{"' + first + b'": "\xff\xfe"}', JSON_TYPE),
        Shape("NaN", 400, None, "malformed_json", b'{"' + first + b'": NaN}', JSON_TYPE),
        Shape("text/plain", 415, "Content-Type", "unsupported_media_type", valid, {"Content-Type": "text/plain"}),
        Shape("form", 415, "Content-Type", "unsupported_media_type", b"a=1", {"Content-Type": FORM}),
        Shape("latin-1", 415, "Content-Type", "unsupported_media_type", valid, {"Content-Type": LATIN1_JSON}),
        Shape("gzip", 415, "Content-Encoding", "unsupported_encoding", gzip.compress(valid), GZIP_JSON),
    ]


FORM = "application/x-www-form-urlencoded"
LATIN1_JSON = "application/json; charset=latin-1"
GZIP_JSON = {**JSON_TYPE, "Content-Encoding": "gzip"}


def bad_created(as_text: str) -> list[tuple[str, Any, int]]:
    """What no webhook's `created` may be: too late, negative, text, a fraction, a boolean."""
    return [("created", value, 422) for value in (10**30, -1, as_text, 1.5, True)]


# (field, value, status): what a signed webhook may not carry, beyond the shapes of any body.
WEBHOOK_VALUES: list[tuple[str, Any, int]] = [
    *bad_created("1700000000000"),
    ("data.metadata.operation_id", 123, 422),
    ("data.metadata.operation_id", {"a": 1}, 422),
    ("data.metadata.operation_id", ["x"], 422),
    ("data.metadata.operation_id", "op_1", 422),
    ("data.metadata.payment_id", "not-a-uuid", 422),
    ("data.metadata", "x", 422),
    ("data.currency", "usd", 422),
    ("data.amount", 0, 422),
    ("data.amount", "100", 422),
    ("data.status", "refunded", 422),
    ("id", 12345, 422),
    ("data", None, 400),
]
STRIPE_HOOK = "/api/v1/webhooks/stripe"
# The same for a Stripe event's envelope (its objects' fields: tests/unit/test_stripe_webhooks.py).
STRIPE_WEBHOOK_VALUES: list[tuple[str, Any, int]] = [
    *bad_created("1700000000"),
    ("id", 12345, 422),
    ("type", ["payment_intent.succeeded"], 422),
    ("data.object", "x", 422),
    ("data.object.id", None, 400),
    ("data", None, 400),
]


def webhook_signature(config: Config, template: str, body: bytes) -> dict[str, str]:
    """Headers that sign `body` as the webhook's provider does, so that only its content is judged."""
    now = int(time.time())
    if template == STRIPE_HOOK:
        payload = body.decode(errors="replace")  # bytes that are not UTF-8 are refused before the signature
        secret = load_stripe_secrets(config).webhook_secret
        return {"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(payload, secret, now)}
    return {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign(config.provider.webhook_secret, now, body)}


def operation_shapes(template: str, op: dict[str, Any], ids: dict[str, str]) -> list[Shape]:
    params = {p["name"]: p for p in op["parameters"]}
    path = template.format(**ids)
    shapes = []
    for name, param in params.items():
        if param["in"] == "path" and name != "provider":
            for raw in HOSTILE_PATH_IDS:
                bad = template.format(**{**ids, name: raw.format(id=ids[name])})
                shapes.append(Shape(f"path {name}={raw}", 422, name, "invalid_id", path=bad))
        if param["in"] == "query":
            numeric = json_type(param["schema"]) in ("integer", "number")
            for raw in HOSTILE_QUERY_NUMBERS if numeric else ["\x00", "\ud800"]:
                query = urllib.parse.quote(raw, safe="", errors="surrogatepass")
                shapes.append(Shape(f"query {name}={raw!r}", 422, name, path=f"{path}?{name}={query}"))
        if name == "Idempotency-Key":
            for key in ("café", "k" * 256):
                headers = {**JSON_TYPE, name: key}
                shapes.append(Shape(f"{name} {key[:8]!r}", 400, name, "invalid_header", b"{}", headers))
    if "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        base = valid_value(schema)
        shapes += body_shapes(schema, base)
        if op.get("security") == []:  # a webhook
            for name, value, status in STRIPE_WEBHOOK_VALUES if template == STRIPE_HOOK else WEBHOOK_VALUES:
                shapes.append(
                    Shape(f"{name}={value!r}", status, name, None, encoded(replaced(base, name, value)), JSON_TYPE)
                )
    return shapes


async def send(
    http: aiohttp.ClientSession, base_url: str, method: str, path: str, headers: dict[str, str], body: bytes | None
) -> tuple[int, Any]:
    url = yarl.URL(base_url + path, encoded=True)
    for _ in range(50):
        async with http.request(method, url, data=body, headers=headers) as response:
            if response.status != 429:  # the gateway's per-credential limit: wait as told
                text = await response.text()
                return response.status, json.loads(text) if text.startswith("{") else text
            await asyncio.sleep(float(response.headers["Retry-After"]))
    raise AssertionError(f"{method} {path}: rate-limited for good")


@pytest.mark.parametrize("service", ["wallet_api", "payment_api"])
async def test_hostile_shapes_on_every_operation_are_refused_and_change_nothing(
    service: str,
    payment_system: Config,
    supervisor: Any,
    resources: Resources,
    command_log: CommandLog,
    wallet_api: Api,
    payment_api: Api,
    http: aiohttp.ClientSession,
) -> None:
    config = payment_system
    ensure_running(config, supervisor, "gateway")
    port = getattr(config, service).port
    async with http.get(f"http://127.0.0.1:{port}/openapi.json") as r:
        document = await r.json()
    wallet_before = await wallet_api.get(f"/api/v1/wallet/{resources.wallet_id}")
    payment_before = await payment_api.get(f"/api/v1/payments/{resources.payment_id}")
    credential = {"Authorization": f"Bearer {issue_token(config.auth, FUZZ_SUBJECT, ['admin'])}"}
    before = command_log.ends()
    sent, wrong = 0, []
    for template, methods in document["paths"].items():
        for method, op in methods.items():
            for shape in operation_shapes(template, op, resources.ids):
                headers = {**credential, **shape.headers}
                if op.get("security") == [] and shape.body is not None:  # a webhook is signed, every byte
                    headers.update(webhook_signature(config, template, shape.body))
                for base_url in (f"http://127.0.0.1:{port}", f"http://127.0.0.1:{config.gateway.port}"):
                    path = shape.path or template.format(**resources.ids)
                    status, body = await send(http, base_url, method.upper(), path, headers, shape.body)
                    sent += 1
                    error = body.get("error", {}) if isinstance(body, dict) else {}
                    expected = (shape.status, shape.code or error.get("code"), shape.field)
                    if base_url.endswith(str(config.gateway.port)) and shape.what.startswith("path "):
                        expected = (400, "invalid_path", "path")  # the gateway forwards no such path
                    if (status, error.get("code"), error.get("field")) != expected:
                        wrong.append(
                            f"{base_url} {method} {template} {shape.what}: {status} {body!r:.160} != {expected}"
                        )
    assert not wrong, f"{len(wrong)} of {sent} answered otherwise:\n" + "\n".join(wrong)
    assert sent > 100, sent
    appended = command_log.appended(before, command_log.ends())
    leaked = [e for e in appended if e["envelope"]["actor_subject"] == FUZZ_SUBJECT]
    # The provider simulator's event ids start with evt_; ours are "fine" or what a shape made them.
    hooks = [e for e in appended if e.get("provider_event_id", "evt_").startswith("evt_") is False]
    assert not leaked and not hooks, leaked + hooks
    assert await wallet_api.get(f"/api/v1/wallet/{resources.wallet_id}") == wallet_before
    assert await payment_api.get(f"/api/v1/payments/{resources.payment_id}") == payment_before
