"""A request id given at the gateway is found everywhere an operator looks: the answer's
header, a refused request's error body, the payment API's log file (with the caller), the
headers of every event of the payment's saga (the deadline path included, with the payment's
own trace id) and `payments trace --request-id`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiokafka import TopicPartition

from connectors.auth import issue_token
from connectors.config import Config
from connectors.log_reader import partition_for, read_messages
from connectors.topics import PAYMENT_CREATED, PAYMENT_FAILED, PAYMENT_OPERATION_COMPLETED, PAYMENT_SUCCEEDED
from connectors.tracing import REQUEST_ID_EVENT_HEADER, TRACEPARENT_HEADER, header_value, trace_id_of
from devtools.devctl import log_dir
from tests.conftest import ensure_running
from tests.integration.test_console import payments
from tests.integration.test_payment_service import external_payment, new_wallet, payment_in, wallet_payment
from tests.support import Api, eventually
from tests.support.kafka import reader

REQUEST_ID = "X-Request-Id"


@pytest.fixture(scope="module")
async def gateway(payment_system: Config, supervisor: Any, http: aiohttp.ClientSession) -> AsyncIterator[Api]:
    ensure_running(payment_system, supervisor, "gateway")
    yield Api(
        http,
        f"http://127.0.0.1:{payment_system.gateway.port}",
        issue_token(payment_system.auth, "rid-admin", ["admin"]),
    )


async def post(api: Api, path: str, body: Any, request_id: str) -> tuple[int, Any, str]:
    headers = {"Authorization": f"Bearer {api.token}", REQUEST_ID: request_id}
    async with api.session.post(api.base_url + path, json=body, headers=headers) as response:
        return response.status, await response.json(), response.headers[REQUEST_ID]


async def headers_on(config: Config, topic: str, key: str) -> list[dict[str, str | None]]:
    """The request id and trace id on each message of `key` on `topic`."""
    tp = TopicPartition(topic, partition_for(key, config.kafka.partitions))
    return [
        {
            "request_id": header_value(message.headers, REQUEST_ID_EVENT_HEADER),
            "trace_id": trace_id_of(header_value(message.headers, TRACEPARENT_HEADER)),
        }
        async for message in read_messages(reader(config), [tp])
        if message.key == key.encode()
    ]


def api_log_lines_with(config: Config, request_id: str) -> list[str]:
    log_file = log_dir(config) / "payment-api.log"
    return [line for line in log_file.read_text(errors="replace").splitlines() if request_id in line]


async def test_a_request_id_from_the_gateway_is_in_the_logs_the_errors_the_events_and_the_trace(
    gateway: Api, wallet_api: Api, config: Config
) -> None:
    wallet_id, user_id = await new_wallet(wallet_api, 10_000)
    request_id = f"rid-{uuid.uuid4().hex}"

    status, created, echoed = await post(
        gateway, "/api/v1/payments", wallet_payment(user_id, wallet_id, 1_500), request_id
    )
    assert status == 201 and echoed == request_id, created
    payment_id = created["id"]
    await payment_in(gateway, payment_id, "completed")

    refused_id = f"rid-{uuid.uuid4().hex}"
    status, refused, echoed = await post(
        gateway, "/api/v1/payments", {**wallet_payment(user_id, wallet_id, 1), "amount": -1}, refused_id
    )
    assert status == 422 and refused["error"]["field"] == "amount"
    assert refused["error"]["request_id"] == refused_id == echoed

    # The API's access line: the route's template, the status, the latency and the caller.
    async def logged() -> list[str] | None:
        return api_log_lines_with(config, request_id) or None

    lines = await eventually(logged, what="the request id in the payment API's log")
    access = [line for line in lines if " access: POST /api/v1/payments 201 " in line]
    assert access and " ms request_id=" in access[0] and "caller=rid-admin" in access[0], lines
    assert any("caller=rid-admin" in line and " 422 " in line for line in api_log_lines_with(config, refused_id))

    created_headers = await headers_on(config, PAYMENT_CREATED.name, payment_id)
    succeeded_headers = await headers_on(config, PAYMENT_SUCCEEDED.name, payment_id)
    assert [h["request_id"] for h in created_headers + succeeded_headers] == [request_id, request_id]
    assert succeeded_headers[0]["trace_id"] == created_headers[0]["trace_id"]

    code, out, err = await payments("trace", "--request-id", request_id)
    assert code == 0, err
    assert f"request {request_id}: payment {payment_id}" in out and "PaymentSucceeded" in out
    code, _, err = await payments("trace", "--request-id", f"rid-{uuid.uuid4().hex}")
    assert code == 2 and "no payment created or refunded by request" in err


async def test_the_deadline_path_keeps_the_payment_s_trace_and_request_id(gateway: Api, config: Config) -> None:
    request_id = f"rid-{uuid.uuid4().hex}"
    status, created, _ = await post(gateway, "/api/v1/payments", external_payment("tok_no_answer"), request_id)
    assert status == 201, created
    failed = await payment_in(gateway, created["id"], "failed", timeout=config.provider.deadline_s + 10)
    assert failed["reason_code"] == "provider_timeout"

    [made] = await headers_on(config, PAYMENT_CREATED.name, created["id"])
    timed_out = await headers_on(config, PAYMENT_OPERATION_COMPLETED.name, created["id"])
    [ended] = await headers_on(config, PAYMENT_FAILED.name, created["id"])
    assert made["request_id"] == request_id and made["trace_id"]
    assert timed_out and all(h == made for h in timed_out), (made, timed_out)
    assert ended == made


async def test_a_direct_call_without_a_request_id_gets_one(payment_api: Api) -> None:
    async with payment_api.session.get(
        f"{payment_api.base_url}/api/v1/payments/{uuid.uuid4()}",
        headers={"Authorization": f"Bearer {payment_api.token}"},
    ) as response:
        body = await response.json()
    assert response.status == 404
    minted = response.headers[REQUEST_ID]
    assert uuid.UUID(minted).version == 4 and body["error"]["request_id"] == minted
