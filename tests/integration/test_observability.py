"""Seeing inside: table-state views, metrics, one trace id across a payment's hops."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
import uuid
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from connectors.auth import API_KEY_HEADER, issue_token
from connectors.config import Config
from connectors.kafka_admin import admin_client, ensure_topics
from connectors.kafka_watch import KafkaWatch
from connectors.log_reader import partition_for, read_messages
from connectors.topics import ALL_TOPICS, TopicSpec
from connectors.tracing import from_headers, trace_id_of
from devtools.devctl import Process, Supervisor
from devtools.localinfra import state_dir
from devtools.sample_data import SAMPLE_WALLETS
from streams.state_page import SERVED_BY_HEADER
from tests.conftest import admin_token, process_named
from tests.integration.kafka_helpers import raw_messages
from tests.integration.test_auth_gateway import TEST_OPERATOR_KEY, token
from tests.integration.test_payment_service import external_payment
from tests.support import Api, eventually, free_port
from tests.support.kafka import admin, reader

SAMPLE_WALLET = SAMPLE_WALLETS[0][0]
SAMPLE_USER = SAMPLE_WALLETS[0][1]


async def scrape(http: aiohttp.ClientSession, port: int, path: str = "/metrics") -> dict[tuple[str, tuple], float]:
    async with http.get(f"http://127.0.0.1:{port}{path}") as response:
        assert response.status == 200
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, w) in ls for k, w in labels.items()))


def worker(http: aiohttp.ClientSession, port: int, token: str | None = None) -> Api:
    return Api(http, f"http://127.0.0.1:{port}", token)


async def test_the_wallet_worker_serves_a_wallets_live_table_state(
    wallet_system: Config, http: aiohttp.ClientSession
) -> None:
    page = worker(http, wallet_system.wallet_worker.web_port, admin_token(wallet_system))
    status, state = await page.get(f"/wallets/{SAMPLE_WALLET}/")
    assert status == 200, state
    assert (state["wallet_id"], state["user_id"], state["currency"]) == (SAMPLE_WALLET, SAMPLE_USER, "USD")
    assert isinstance(state["balance"], int) and state["version"] >= 1
    assert (await page.get(f"/wallets/{uuid.uuid4()}/"))[0] == 404
    status, body = await page.get("/wallets/not-a-uuid/")
    assert (status, body["error"]["field"]) == (422, "wallet_id")


async def test_worker_pages_ask_for_the_same_credentials_and_ownership_as_the_api(
    wallet_system: Config, http: aiohttp.ClientSession
) -> None:
    config = wallet_system
    port = config.wallet_worker.web_port
    path = f"/wallets/{SAMPLE_WALLET}/"
    async with http.get(f"http://127.0.0.1:{port}{path}") as r:
        assert (r.status, r.headers.get("WWW-Authenticate")) == (401, "Bearer")
        assert (await r.json())["error"]["code"] == "unauthenticated"
    forged = issue_token(dataclasses.replace(config.auth, jwt_keys={"k2": "x" * 40}), "test-admin", ["admin"])
    for credential in ("not-a-jwt", forged):
        assert (await worker(http, port, credential).get(path))[0] == 401
    async with http.get(f"http://127.0.0.1:{port}{path}", headers={API_KEY_HEADER: TEST_OPERATOR_KEY}) as r:
        assert r.status == 200  # an API key works like a token
    assert (await worker(http, port, token(config, SAMPLE_USER, "user")).get(path))[0] == 200
    assert (await worker(http, port, token(config, "test-operator", "operator")).get(path))[0] == 200
    status, body = await worker(http, port, token(config, str(uuid.uuid4()), "user")).get(path)
    assert (status, body["error"]["code"]) == (404, "not_found")  # someone else's: as if absent
    for open_page in ("/ready/", "/metrics"):  # supervisors and Prometheus read these unauthenticated
        async with http.get(f"http://127.0.0.1:{port}{open_page}") as r:
            assert r.status == 200


@pytest.mark.usefixtures("payment_system")
async def test_the_payment_page_never_shows_the_provider_token_and_hides_others_payments(
    config: Config, payment_api: Api, http: aiohttp.ClientSession
) -> None:
    secret = "tok_success"
    status, created = await payment_api.post("/api/v1/payments", external_payment(secret))
    assert status == 201, created
    payer = created["user_id"]
    port = config.payment_worker.web_port
    path = f"/payments/{created['id']}/"

    async def state_as(credential: str) -> dict[str, Any] | None:
        status, body = await worker(http, port, credential).get(path)
        return body if status == 200 else None

    state = await eventually(lambda: state_as(token(config, payer, "user")), what="the payer reading the page")
    assert state["payment_id"] == created["id"] and state["user_id"] == payer
    assert "provider_token" not in state and secret not in json.dumps(state), state
    assert await state_as(token(config, "test-operator", "operator")) is not None
    assert (await worker(http, port, token(config, str(uuid.uuid4()), "user")).get(path))[0] == 404
    assert (await worker(http, port).get(path))[0] == 401


async def test_with_two_wallet_workers_either_answers_for_every_wallet(
    wallet_system: Config, supervisor: Supervisor, http: aiohttp.ClientSession, wallet_api: Api
) -> None:
    """Asked on a freshly started worker and again once both have produced. faust's topic_route
    asked the producer for the partition and raised TypeError (a 500) whenever the producer's
    metadata lacked the consumed topic. Forwarded requests carry the caller's credentials and
    the owner checks them."""
    config = wallet_system
    created: dict[str, str] = {}
    while len({partition_for(w, config.kafka.partitions) for w in created}) < config.kafka.partitions:
        owner = str(uuid.uuid4())  # a wallet in every partition, so each worker owns some
        status, body = await wallet_api.post("/api/v1/wallets", {"user_id": owner, "currency": "USD"})
        assert status == 201 and len(created) < 50, body
        created[body["id"]] = owner
    owners = {**created, **{w: user for w, user, *_ in SAMPLE_WALLETS}}
    first = process_named(config, "wallet-worker")
    port = free_port()
    second = dataclasses.replace(
        first, name="wallet-worker-2", args=("worker", "-l", "info", "--web-port", str(port)), health_port=port
    )
    supervisor.start(second, extra_env={"WALLET_WORKER_WEB_PORT": str(port)})
    try:
        supervisor.wait_healthy(second)

        async def both_ready() -> bool:
            for worker_port in (config.wallet_worker.web_port, port):
                async with http.get(f"http://127.0.0.1:{worker_port}/ready/") as r:
                    if r.status != 200 or not (await r.json())["assigned"]:
                        return False
            return True

        await eventually(both_ready, timeout=60, interval=0.5, what="both workers ready with partitions")
        served_by: dict[int, set[str]] = {config.wallet_worker.web_port: set(), port: set()}

        async def ask(worker_port: int, wallet_id: str, credential: str | None) -> tuple[int, Any]:
            """One request, retried only while partitions are announced as moving (503)."""
            for _ in range(100):
                async with http.get(
                    f"http://127.0.0.1:{worker_port}/wallets/{wallet_id}/",
                    headers={"Authorization": f"Bearer {credential}"} if credential else {},
                ) as r:
                    assert r.status != 500, await r.text()
                    if r.status != 503:
                        if r.status == 200:
                            served_by[worker_port].add(r.headers[SERVED_BY_HEADER])
                        return r.status, await r.json()
                await asyncio.sleep(0.2)
            raise AssertionError(f"{wallet_id} stayed unassigned on port {worker_port}")

        async def every_page_answers() -> None:
            for worker_port in (port, config.wallet_worker.web_port):  # the fresh worker first
                for wallet_id, owner in owners.items():
                    status, state = await ask(worker_port, wallet_id, admin_token(config))
                    assert status == 200 and state["wallet_id"] == wallet_id, (worker_port, state)
                    status, _ = await ask(worker_port, wallet_id, token(config, owner, "user"))
                    assert status == 200, (worker_port, wallet_id)
                    status, _ = await ask(worker_port, wallet_id, token(config, str(uuid.uuid4()), "user"))
                    assert status == 404, (worker_port, wallet_id)
                    assert (await ask(worker_port, wallet_id, None))[0] == 401

        await every_page_answers()
        # Once a worker has produced, its producer refreshes metadata for the topics it
        # produces to only, and the topic it consumes drops out of that cache: the usual
        # state of a worker, and the one in which faust's routing failed.
        for wallet_id in created:
            income = {"type": "income", "amount": 1, "currency": "USD"}
            assert (await wallet_api.post(f"/api/v1/wallet/{wallet_id}/movement", income))[0] == 201
        await every_page_answers()
        # Each worker answered some wallets itself and had the others answered by their owner.
        assert all(len(urls) == 2 for urls in served_by.values()), served_by
    finally:
        supervisor.stop(second.name)
        await first_worker_alone(config, http)


async def first_worker_alone(config: Config, http: aiohttp.ClientSession) -> None:
    """faust does not leave its group when it stops: the partitions a stopped worker held wait a
    session timeout before the group gives them to the other, and a test after this one would
    find its wallet command unanswered until then."""
    watch = KafkaWatch(admin(config), timeout_s=5)

    async def settled() -> bool:
        [group] = await asyncio.to_thread(watch.groups, ["wallet-worker"])
        if group.members != 1 or group.state != "stable":
            return False
        async with http.get(f"http://127.0.0.1:{config.wallet_worker.web_port}/ready/") as r:
            return r.status == 200

    await eventually(settled, timeout=60, interval=0.5, what="the first wallet worker alone in its group and ready")


async def test_a_worker_routes_its_pages_without_producer_metadata_for_the_topic_it_consumes(
    wallet_system: Config, supervisor: Supervisor, http: aiohttp.ClientSession
) -> None:
    """The flaky 500 of the routed pages: faust's topic_route asked the worker's producer for
    the key's partition. Once a producer has sent to a topic missing from its first metadata
    snapshot (on a fresh broker: the worker's own changelog topics), it tracks only the topics
    it produces to, the consumed topic drops out, and routing raised TypeError. Here a probe
    worker is made to produce to a topic created after it started."""
    config = wallet_system
    run = uuid.uuid4().hex[:8]
    source, echo, app_id = TopicSpec(f"probe-{run}", "id"), TopicSpec(f"probe-{run}-echo", "id"), f"probe-{run}"
    ensure_topics(admin(config), config.kafka, (source,))
    port = free_port()
    probe = Process(
        "routing-probe",
        "tests.integration.routing_probe_worker",
        ("worker", "--web-port", str(port)),
        port,
        "a worker for the routing test",
        "/ready/",
    )
    producer = AIOKafkaProducer(**admin(config).aiokafka())  # the probe's topics are the test's own
    await producer.start()
    supervisor.start(probe, extra_env={"PROBE_APP": app_id, "PROBE_SOURCE": source.name, "PROBE_PORT": str(port)})
    try:
        supervisor.wait_healthy(probe)
        owner, keys = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(8)]
        for key in keys:
            await producer.send_and_wait(source.name, json.dumps({"user_id": owner}).encode(), key.encode())
        page = worker(http, port, token(config, owner, "user"))

        async def every_state_shown() -> bool:
            return all([(await page.get(f"/states/{key}/"))[0] == 200 for key in keys])

        await eventually(every_state_shown, what="the probe's table holding every key")
        ensure_topics(admin(config), config.kafka, (echo,))
        echoed = json.dumps({"user_id": owner, "echo_to": echo.name}).encode()
        await producer.send_and_wait(source.name, echoed, keys[0].encode())
        await eventually(
            lambda: raw_messages(config, echo.name, admin(config)), what="the probe producing to the new topic"
        )
        for key in keys:
            status, body = await page.get(f"/states/{key}/")
            assert status == 200 and body["user_id"] == owner, (status, body)
            assert (await page.as_(token(config, str(uuid.uuid4()), "user")).get(f"/states/{key}/"))[0] == 404
    finally:
        await producer.stop()
        supervisor.stop(probe.name)
        topics = [source.name, echo.name, f"{app_id}-states-changelog"]
        for future in admin_client(admin(config)).delete_topics(topics, operation_timeout=30).values():
            with contextlib.suppress(Exception):  # a topic the probe never got to create
                future.result()
        shutil.rmtree(state_dir(config) / "faust" / f"{app_id}-{port}", ignore_errors=True)


async def test_metrics_parse_and_move_with_traffic(
    wallet_system: Config, wallet_api: Api, http: aiohttp.ClientSession
) -> None:
    config = wallet_system
    api_before = await scrape(http, config.wallet_api.port)
    worker_before = await scrape(http, config.wallet_worker.web_port)
    status, wallet = await wallet_api.post("/api/v1/wallets", {"user_id": str(uuid.uuid4()), "currency": "USD"})
    assert status == 201
    for _ in range(3):
        status, _ = await wallet_api.post(
            f"/api/v1/wallet/{wallet['id']}/movement", {"type": "income", "amount": 100, "currency": "USD"}
        )
        assert status == 201
    api_after = await scrape(http, config.wallet_api.port)
    worker_after = await scrape(http, config.wallet_worker.web_port)
    route = "/api/v1/wallet/{wallet_id}/movement"
    assert (
        total(api_after, "http_requests_total", route=route, status="201")
        - total(api_before, "http_requests_total", route=route, status="201")
        == 3
    )
    assert total(api_after, "http_request_duration_seconds_count", route=route) > 0
    handled = ("events_processed_total", {"agent": "wallet-worker", "outcome": "handled"})
    assert total(worker_after, handled[0], **handled[1]) - total(worker_before, handled[0], **handled[1]) >= 4

    async def projection_lag_reported() -> Any:
        samples = await scrape(http, config.projector.metrics_port)
        return any(name == "projection_lag_seconds" for name, _ in samples)

    await eventually(projection_lag_reported, what="projection lag on the projector's /metrics")

    async def consumer_lag_reported() -> Any:
        samples = await scrape(http, config.wallet_worker.web_port)
        return any(name == "consumer_lag_messages" for name, _ in samples)

    await eventually(consumer_lag_reported, timeout=15, what="consumer lag on the worker's /metrics")


@pytest.mark.usefixtures("payment_system")
async def test_one_trace_id_travels_in_the_headers_of_every_event_of_a_payment(
    config: Config, payment_api: Api, http: aiohttp.ClientSession
) -> None:
    trace_id = uuid.uuid4().hex
    headers = {"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}
    status, payment = await payment_api.post(
        "/api/v1/payments",
        {
            "user_id": SAMPLE_USER,
            "amount": 100,
            "currency": "USD",
            "payment_method_type": "wallet",
            "wallet_id": SAMPLE_WALLET,
            "description": "traced",
        },
        headers=headers,
    )
    assert status in (200, 201, 202), payment
    payment_id = payment["id"]

    async def traced_events() -> list[tuple[str, str | None]] | None:
        found = []
        for spec in ALL_TOPICS:
            key = SAMPLE_WALLET if spec.key == "wallet_id" else payment_id
            tp = TopicPartition(spec.name, partition_for(key, config.kafka.partitions))
            async for message in read_messages(reader(config), [tp]):
                if payment_id.encode() in message.value or (message.key == payment_id.encode()):
                    found.append((spec.name, trace_id_of(from_headers(message.headers))))
        topics = {topic for topic, _ in found}
        return (
            found
            if {
                "payment.created",
                "wallet.movement_required",
                "wallet.movement_updates",
                "wallet.payment_operation.completed",
                "payment.success",
            }
            <= topics
            else None
        )

    found = await eventually(traced_events, timeout=30, interval=0.5, what="every hop of the payment")
    assert all(seen == trace_id for _, seen in found), found


async def test_spans_are_exported_over_otlp_when_an_endpoint_is_configured(
    wallet_system: Config, supervisor: Supervisor, http: aiohttp.ClientSession
) -> None:
    from aiohttp import web
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[tuple[str, str]] = []  # (trace id, span name)

    async def collect(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                received.extend((s.trace_id.hex(), s.name) for s in scope_spans.spans)
        return web.Response(status=200)

    collector = web.Application()
    collector.add_routes([web.post("/v1/traces", collect)])
    runner = web.AppRunner(collector)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    collector_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    api_port = free_port()
    traced_api = dataclasses.replace(
        process_named(wallet_system, "wallet-api"), name="wallet-api-otel", health_port=api_port
    )
    supervisor.start(
        traced_api,
        extra_env={
            "WALLET_API_PORT": str(api_port),
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    try:
        supervisor.wait_healthy(traced_api)
        trace_id = uuid.uuid4().hex
        async with http.post(
            f"http://127.0.0.1:{api_port}/api/v1/wallets",
            json={"user_id": str(uuid.uuid4()), "currency": "USD"},
            headers={
                "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01",
                "Authorization": f"Bearer {admin_token(wallet_system)}",
            },
        ) as r:
            assert r.status == 201
            assert trace_id_of(r.headers["traceparent"]) == trace_id

        async def exported() -> Any:
            return [name for tid, name in received if tid == trace_id]

        names = await eventually(exported, timeout=15, what="the request's span at the OTLP endpoint")
        assert "POST /api/v1/wallets" in names
    finally:
        supervisor.stop(traced_api.name)
        await runner.cleanup()
