"""Every role boundary, through the gateway with real HTTP: allowed, 401, 403, 404 for
others' resources, 429 under a burst, body limits, request ids, forged and replayed webhooks,
paths and headers that could be read two ways, tokens with absurd claims, and long-polls that
must not starve anyone else."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from typing import Any

import aiohttp
import jwt
import pytest

from connectors.auth import API_KEY_HEADER, issue_token
from connectors.config import Config
from connectors.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from connectors.topics import EXTERNAL_PROVIDER_EVENTS, PAYMENT_CREATED, WALLET_MOVEMENT_UPDATES
from domain.events import EventMeta
from domain.money import Money
from domain.payment import RequestPayment
from services.http import MAX_WAIT_S
from streams.envelope import now_ms, to_record
from tests.conftest import ensure_running
from tests.integration.kafka_helpers import events_for_key, publish, saga_passed
from tests.integration.test_payment_service import external_payment, payment_in, wallet_balance, wallet_payment
from tests.support import JSON, Api

# Its hash is in the test environments' auth.api_keys (subject ops-test-key, role operator).
TEST_OPERATOR_KEY = "pk_test_operator_not_for_production"


@pytest.fixture(scope="module")
def gateway(payment_system: Config, supervisor: Any, http: aiohttp.ClientSession) -> Api:
    ensure_running(payment_system, supervisor, "gateway")
    return Api(http, f"http://127.0.0.1:{payment_system.gateway.port}")


def token(config: Config, subject: str, *roles: str) -> str:
    return issue_token(config.auth, subject, list(roles))


@dataclasses.dataclass
class Users:
    admin: Api
    operator: Api
    alice: Api
    bob: Api
    alice_id: str
    bob_id: str
    alice_wallet: str
    bob_wallet: str


@pytest.fixture(scope="module")
async def users(gateway: Api, config: Config) -> Users:
    alice_id, bob_id = str(uuid.uuid4()), str(uuid.uuid4())
    admin = gateway.as_(token(config, "test-admin", "admin"))
    operator = gateway.as_(token(config, "test-operator", "operator"))
    alice, bob = gateway.as_(token(config, alice_id, "user")), gateway.as_(token(config, bob_id, "user"))
    wallets = []
    for api, user in ((alice, alice_id), (bob, bob_id)):
        status, body = await api.post("/api/v1/wallets", {"user_id": user, "currency": "USD"})
        assert status == 201, body  # a user opens their own wallet
        status, body2 = await operator.post(
            f"/api/v1/wallet/{body['id']}/movement", {"type": "income", "amount": 10_000, "currency": "USD"}
        )
        assert status == 201, body2
        await wallet_balance(admin, body["id"], 10_000)
        wallets.append(body["id"])
    return Users(admin, operator, alice, bob, alice_id, bob_id, wallets[0], wallets[1])


async def test_missing_or_invalid_credentials_are_401(gateway: Api, config: Config, users: Users) -> None:
    path = f"/api/v1/wallet/{users.alice_wallet}"
    now = int(time.time())
    claims = {"sub": "x", "roles": ["admin"], "iss": config.auth.issuer, "aud": config.auth.audience, "iat": now}
    forged = [
        None,
        "not-a-jwt",
        jwt.encode({**claims, "exp": now + 60}, "a-key-we-never-had-0123456789abcdef", headers={"kid": "k2"}),
        jwt.encode({**claims, "exp": now + 60}, "a-key-we-never-had-0123456789abcdef", headers={"kid": "k9"}),
        jwt.encode({**claims, "exp": now - 3600}, config.auth.jwt_keys["k2"], headers={"kid": "k2"}),  # expired
        jwt.encode({**claims, "exp": now + 60, "aud": "other"}, config.auth.jwt_keys["k2"], headers={"kid": "k2"}),
        jwt.encode({**claims, "exp": now + 60}, None, algorithm="none", headers={"kid": "k2"}),
        jwt.encode({**claims, "exp": now + 60, "roles": ["root"]}, config.auth.jwt_keys["k2"], headers={"kid": "k2"}),
    ]
    for credential in forged:
        status, body = await gateway.as_(credential).get(path)
        assert status == 401 and body["error"]["code"] == "unauthenticated", (credential, body)
    status, body = await gateway.request("GET", path, headers={API_KEY_HEADER: "pk_wrong"})
    assert status == 401, body
    # The services refuse the same way when called directly, behind the gateway's back.
    direct = Api(gateway.session, f"http://127.0.0.1:{config.wallet_api.port}")
    assert (await direct.get(path))[0] == 401
    assert (await direct.as_(forged[2]).get(path))[0] == 401


async def test_every_active_key_verifies_so_keys_rotate(gateway: Api, config: Config, users: Users) -> None:
    for kid, key in config.auth.jwt_keys.items():
        now = int(time.time())
        claims = {
            "sub": users.alice_id,
            "roles": ["user"],
            "iss": config.auth.issuer,
            "aud": config.auth.audience,
            "iat": now,
            "exp": now + 60,
        }
        status, _ = await gateway.as_(jwt.encode(claims, key, headers={"kid": kid})).get(
            f"/api/v1/wallet/{users.alice_wallet}"
        )
        assert status == 200, kid


async def test_a_user_sees_only_their_own_wallets_and_others_look_absent(users: Users) -> None:
    status, body = await users.alice.get(f"/api/v1/wallet/{users.alice_wallet}")
    assert status == 200 and body["user_id"] == users.alice_id
    for path in (f"/api/v1/wallet/{users.bob_wallet}", f"/api/v1/wallet/{users.bob_wallet}/movements"):
        status, others = await users.alice.get(path)
        assert status == 404 and others["error"]["code"] == "wallet_not_found", others
        _, missing = await users.alice.get(path.replace(users.bob_wallet, str(uuid.uuid4())))
        assert missing["error"]["code"] == others["error"]["code"]  # nothing tells the two apart
    status, page = await users.alice.get(f"/api/v1/wallet/{users.alice_wallet}/movements")
    assert status == 200 and page["data"]
    movement = page["data"][0]["id"]
    assert (await users.alice.get(f"/api/v1/movement/{movement}"))[0] == 200
    assert (await users.bob.get(f"/api/v1/movement/{movement}"))[0] == 404
    assert (await users.operator.get(f"/api/v1/wallet/{users.bob_wallet}"))[0] == 200


async def test_only_operators_and_admins_move_money_and_revert(users: Users, config: Config) -> None:
    income = {"type": "income", "amount": 5, "currency": "USD"}
    status, body = await users.alice.post(f"/api/v1/wallet/{users.alice_wallet}/movement", income)
    assert status == 403 and body["error"]["code"] == "forbidden", body
    status, body = await users.alice.post("/api/v1/wallets", {"user_id": users.bob_id, "currency": "USD"})
    assert status == 403 and body["error"]["field"] == "user_id", body
    # An API key works like a token: this one is an operator's.
    status, moved = await users.operator.request(
        "POST",
        f"/api/v1/wallet/{users.alice_wallet}/movement",
        json=income,
        headers={"Authorization": "", API_KEY_HEADER: TEST_OPERATOR_KEY},
    )
    assert status == 201, moved
    revert = {"reason": "test", "requested_by": "tests"}
    status, body = await users.alice.post(f"/api/v1/movement/{moved['id']}/revert", revert)
    assert status == 403, body
    status, body = await users.operator.post(f"/api/v1/movement/{moved['id']}/revert", revert)
    assert status == 201, body
    await wallet_balance(users.admin, users.alice_wallet, 10_000)


async def test_a_user_pays_only_from_their_own_wallet_and_reads_only_their_payments(users: Users) -> None:
    status, paid = await users.alice.post("/api/v1/payments", wallet_payment(users.alice_id, users.alice_wallet, 100))
    assert status == 201 and paid["status"] == "completed", paid
    # Bob's wallet, whether paid for as Bob or as Alice: it does not exist for Alice.
    status, body = await users.alice.post("/api/v1/payments", wallet_payment(users.alice_id, users.bob_wallet, 100))
    assert status == 404 and body["error"]["code"] == "wallet_not_found", body
    status, body = await users.alice.post("/api/v1/payments", wallet_payment(users.bob_id, users.bob_wallet, 100))
    assert status == 403 and body["error"]["field"] == "user_id", body
    status, body = await users.operator.post("/api/v1/payments", wallet_payment(users.bob_id, users.bob_wallet, 1))
    assert status == 403, body
    await wallet_balance(users.admin, users.bob_wallet, 10_000)

    assert (await users.alice.get(f"/api/v1/payments/{paid['id']}"))[0] == 200
    status, body = await users.bob.get(f"/api/v1/payments/{paid['id']}")
    assert status == 404 and body["error"]["code"] == "payment_not_found", body
    assert (await users.operator.get(f"/api/v1/payments/{paid['id']}"))[0] == 200

    status, body = await users.alice.post(f"/api/v1/payments/{paid['id']}/refund", {"reason": "mine"})
    assert status == 403, body
    status, body = await users.operator.post(f"/api/v1/payments/{paid['id']}/refund", {"reason": "ops"})
    assert status == 202, body
    await payment_in(users.admin, paid["id"], "refunded")


async def test_a_burst_from_one_credential_gets_429_with_retry_after(gateway: Api, config: Config) -> None:
    burster = gateway.as_(token(config, f"burst-{uuid.uuid4()}", "operator"))
    bystander = gateway.as_(token(config, f"calm-{uuid.uuid4()}", "operator"))
    path = f"/api/v1/wallet/{uuid.uuid4()}"  # a 404 upstream: cheap, and no state

    async def one() -> tuple[int, str | None]:
        async with gateway.session.get(
            gateway.base_url + path, headers={"Authorization": f"Bearer {burster.token}"}
        ) as response:
            return response.status, response.headers.get("Retry-After")

    answers = await asyncio.gather(*(one() for _ in range(config.gateway.burst + 50)))
    limited = [retry for status, retry in answers if status == 429]
    assert limited and all(retry is not None and int(retry) >= 1 for retry in limited), answers[-5:]
    assert {status for status, _ in answers} <= {404, 429}
    assert (await bystander.get(path))[0] == 404  # the limit is per credential


async def test_request_ids_and_body_limits(gateway: Api, config: Config, users: Users) -> None:
    async with gateway.session.get(
        gateway.base_url + f"/api/v1/wallet/{users.alice_wallet}",
        headers={"Authorization": f"Bearer {users.alice.token}", "X-Request-Id": "caller-req-12345"},
    ) as response:
        assert response.status == 200 and response.headers["X-Request-Id"] == "caller-req-12345"
    async with gateway.session.get(
        gateway.base_url + "/api/v1/wallet/x", headers={"X-Request-Id": 'bad id; " x'}
    ) as response:
        assert response.status == 401 and uuid.UUID(response.headers["X-Request-Id"])
    huge = {"type": "income", "amount": 1, "currency": "USD", "description": "x" * (config.gateway.max_body_bytes + 1)}
    status, body = await users.operator.post(f"/api/v1/wallet/{users.alice_wallet}/movement", huge)
    assert status == 413, body
    assert (await gateway.get("/api/v1/nowhere"))[0] == 404


async def test_a_read_may_wait_past_the_gateways_own_upstream_timeout(
    gateway: Api, users: Users, config: Config
) -> None:
    """The gateway gave up after gateway.upstream_timeout_s (504) while the API allows ?wait=
    up to MAX_WAIT_S; now it allows a request the wait it asks for."""
    wait = config.gateway.upstream_timeout_s + 1
    assert wait <= MAX_WAIT_S
    started = time.monotonic()
    status, body = await users.admin.get(f"/api/v1/payments/{uuid.uuid4()}?wait={wait:g}")
    assert (status, body["error"]["code"]) == (404, "payment_not_found"), body
    assert time.monotonic() - started >= wait  # the API waited the whole time for the payment to appear


async def test_forged_and_replayed_webhooks_through_the_gateway_change_nothing(
    gateway: Api, payment_api: Api, config: Config
) -> None:
    _, created = await payment_api.post("/api/v1/payments", external_payment("tok_success"))
    done = await payment_in(payment_api, created["id"], "completed")
    before = await events_for_key(config, EXTERNAL_PROVIDER_EVENTS.name, created["id"])
    hook = {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "charge.failed",
        "created": int(time.time() * 1000),
        "data": {
            "id": "ch_forged",
            "object": "charge",
            "amount": done["amount"],
            "currency": "USD",
            "status": "failed",
            "metadata": {"payment_id": created["id"], "operation_id": done["operations"][0]["id"]},
        },
    }
    raw = json.dumps(hook).encode()
    now = int(time.time())
    forged = {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign("guessed-secret", now, raw), **JSON}
    stale = {
        TIMESTAMP_HEADER: str(now - 3600),
        SIGNATURE_HEADER: sign(config.provider.webhook_secret, now - 3600, raw),
        **JSON,
    }
    for headers in (forged, stale):
        status, body = await gateway.post("/api/v1/webhooks/simulator", data=raw, headers=headers)
        assert status == 401 and body["error"]["code"] == "invalid_signature", body
    assert await events_for_key(config, EXTERNAL_PROVIDER_EVENTS.name, created["id"]) == before
    # A genuine delivery replayed: accepted (the provider retries), applied at most once.
    first = before[0]
    replay = {
        "id": first["provider_event_id"],
        "type": "charge.succeeded",
        "created": first["provider_timestamp"],
        "data": {
            "id": first["provider_reference"],
            "object": "charge",
            "amount": first["amount"]["amount"],
            "currency": "USD",
            "status": first["status"],
            "metadata": {"payment_id": created["id"], "operation_id": first["operation_id"]},
        },
    }
    raw = json.dumps(replay).encode()
    signed = {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign(config.provider.webhook_secret, now, raw), **JSON}
    for _ in range(2):
        assert (await gateway.post("/api/v1/webhooks/simulator", data=raw, headers=signed))[0] == 200
    await saga_passed(config)
    after = await payment_in(payment_api, created["id"], "completed")
    assert after["operations"] == done["operations"] and after["status"] == done["status"]


async def test_a_users_payment_that_reaches_the_topic_cannot_debit_another_users_wallet(
    users: Users, config: Config
) -> None:
    """The API would have answered 404; the wallet worker refuses it on its own as well."""
    payment_id = str(uuid.uuid4())
    created = RequestPayment(
        EventMeta(str(uuid.uuid4()), now_ms(), payment_id, None, users.alice_id, ("user",)),
        payment_id,
        users.alice_id,
        Money(100, "USD"),
        "wallet",
        users.bob_wallet,
        None,
        None,
        "smuggled past the API",
        None,
    )
    await publish(config, PAYMENT_CREATED.name, payment_id, to_record(created))
    failed = await payment_in(users.admin, payment_id, "failed")
    assert failed["reason_code"] == "actor_not_allowed", failed
    assert users.alice_id in failed["reason"]
    await wallet_balance(users.admin, users.bob_wallet, 10_000)
    # The saga's events keep the actor that asked.
    updates = await events_for_key(config, WALLET_MOVEMENT_UPDATES.name, users.bob_wallet)
    mine = [e for e in updates if e.get("payment_id") == payment_id]
    assert mine and all(e["envelope"]["actor_subject"] == users.alice_id for e in mine)


async def raw_get(port: int, target: str, headers: list[tuple[str, str]]) -> tuple[int, Any]:
    """A request line sent byte for byte: HTTP clients normalise the paths this tests."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *(f"{k}: {v}" for k, v in headers)]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    answer = await reader.read()
    writer.close()
    status_line, _, body = answer.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(body)


async def metrics_scrapes(config: Config, http: aiohttp.ClientSession) -> int:
    """How often the payment API's /metrics was read, this read not included."""
    async with http.get(f"http://127.0.0.1:{config.payment_api.port}/metrics") as response:
        text = await response.text()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("http_requests_total{") and 'route="/metrics"' in line
    )


async def test_paths_that_could_be_read_two_ways_are_refused_and_never_reach_a_service(
    gateway: Api, config: Config, users: Users, http: aiohttp.ClientSession
) -> None:
    payment = str(uuid.uuid4())
    targets = [
        "/api/v1/webhooks/%2e%2e/%2e%2e/%2e%2e/metrics",
        "/api/v1/webhooks/%2E%2E/%2e%2E/%2e%2e/metrics",
        f"/api/v1/webhooks/%2e%2e/payments/{payment}",
        "/api/v1/webhooks/../../../metrics",
        "/api/v1/payments/./%2e%2e/metrics",
        "/api/v1/webhooks/simulator%2f..%2f..%2fmetrics",
        "/api/v1/webhooks/simulator%5c..%5c..%5cmetrics",
        "/api/v1/webhooks\\..\\..\\metrics",
        f"/api/v1/payments/{payment}%00",
        f"/api/v1/payments/{payment}%252e%252e",
        "/api//v1/payments",
    ]
    before = await metrics_scrapes(config, http)
    for target in targets:
        for credential in ([], [("Authorization", f"Bearer {users.alice.token}")]):
            status, body = await raw_get(config.gateway.port, target, credential)
            assert (status, body["error"]["code"], body["error"]["field"]) == (400, "invalid_path", "path"), target
    assert await metrics_scrapes(config, http) == before + 1  # only the first count read it
    # The same payment by its plain path: answered by the service, as the canonical path.
    status, body = await raw_get(config.gateway.port, f"/api/v1/payments/{payment}", [])
    assert (status, body["error"]["code"]) == (401, "unauthenticated")
    status, body = await raw_get(config.gateway.port, "/%61pi/v1/payments/" + payment, [("X-Api-Key", "pk_no")])
    assert (status, body["error"]["code"]) == (401, "unauthenticated")  # decoded once, then routed


async def test_a_credential_header_sent_twice_is_refused(config: Config, users: Users) -> None:
    path = f"/api/v1/wallet/{users.alice_wallet}"
    twice = [
        [("Authorization", f"Bearer {users.alice.token}"), ("Authorization", f"Bearer {users.admin.token}")],
        [("Authorization", f"Bearer {users.admin.token}"), ("authorization", f"Bearer {users.alice.token}")],
        [(API_KEY_HEADER, TEST_OPERATOR_KEY), (API_KEY_HEADER.upper(), "pk_other")],
    ]
    for headers in twice:
        status, body = await raw_get(config.gateway.port, path, headers)
        assert (status, body["error"]["code"]) == (400, "invalid_header"), body
        assert body["error"]["field"] == headers[0][0]
    assert (await raw_get(config.gateway.port, path, twice[0][:1]))[0] == 200


async def test_a_rightly_signed_token_with_absurd_times_is_401(gateway: Api, config: Config, users: Users) -> None:
    now = int(time.time())
    claims = {"sub": users.alice_id, "roles": ["user"], "iss": config.auth.issuer, "aud": config.auth.audience}
    key = config.auth.jwt_keys[config.auth.signing_kid]
    direct = Api(gateway.session, f"http://127.0.0.1:{config.wallet_api.port}")
    for times in ({"iat": now, "exp": str(now + 60)}, {"iat": now, "exp": 1e20}, {"iat": str(now), "exp": now + 60}):
        signed = jwt.encode({**claims, **times}, key, headers={"kid": config.auth.signing_kid})
        for api in (gateway, direct):
            status, body = await api.as_(signed).get(f"/api/v1/wallet/{users.alice_wallet}")
            assert (status, body["error"]["code"]) == (401, "unauthenticated"), (times, body)
