"""Seeing inside: table-state views, metrics, one trace id across a payment's hops."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import aiohttp
import pytest
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from connectors.config import Config
from connectors.log_reader import partition_for, read_messages
from connectors.tracing import from_headers, trace_id_of
from services.devctl import Supervisor
from services.sample_data import SAMPLE_WALLETS
from streams.topics import ALL_TOPICS
from tests.conftest import admin_token, process_named
from tests.support import Api, eventually

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


async def test_the_wallet_worker_serves_a_wallets_live_table_state(
    wallet_system: Config, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"http://127.0.0.1:{wallet_system.wallet_worker.web_port}/wallets/{SAMPLE_WALLET}/") as r:
        assert r.status == 200
        state = await r.json()
    assert (state["wallet_id"], state["user_id"], state["currency"]) == (SAMPLE_WALLET, SAMPLE_USER, "USD")
    assert isinstance(state["balance"], int) and state["version"] >= 1
    async with http.get(f"http://127.0.0.1:{wallet_system.wallet_worker.web_port}/wallets/{uuid.uuid4()}/") as r:
        assert r.status == 404


async def test_with_two_wallet_workers_either_answers_for_every_wallet(
    wallet_system: Config, supervisor: Supervisor, http: aiohttp.ClientSession, wallet_api: Api
) -> None:
    config = wallet_system
    wallets = [w for w, *_ in SAMPLE_WALLETS]
    for _ in range(5):
        status, body = await wallet_api.post("/api/v1/wallets", {"user_id": str(uuid.uuid4()), "currency": "USD"})
        assert status == 201
        wallets.append(body["id"])
    assert len({partition_for(w, config.kafka.partitions) for w in wallets}) > 1
    first = process_named(config, "wallet-worker")
    port = config.wallet_worker.web_port + 2000  # clear of the other environments a machine may run
    second = dataclasses.replace(
        first, name="wallet-worker-2", args=("worker", "-l", "info", "--web-port", str(port)), health_port=port
    )
    supervisor.start(second, extra_env={"WALLET_WORKER_WEB_PORT": str(port)})
    try:
        supervisor.wait_healthy(second)

        async def both_answer() -> bool:
            for worker_port in (config.wallet_worker.web_port, port):
                for wallet_id in wallets:
                    async with http.get(f"http://127.0.0.1:{worker_port}/wallets/{wallet_id}/") as r:
                        if r.status != 200 or (await r.json())["wallet_id"] != wallet_id:
                            return False
            return True

        await eventually(both_answer, timeout=60, interval=1, what="both workers answering for every wallet")
        owned = {}
        for worker_port in (config.wallet_worker.web_port, port):
            async with http.get(f"http://127.0.0.1:{worker_port}/ready/") as r:
                owned[worker_port] = (await r.json())["assigned"]
        assert all(owned.values())  # both hold partitions: the answers were routed, not all local
    finally:
        supervisor.stop(second.name)


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
    await asyncio.sleep(0.5)

    async def traced_events() -> list[tuple[str, str | None]] | None:
        found = []
        for spec in ALL_TOPICS:
            key = SAMPLE_WALLET if spec.key == "wallet_id" else payment_id
            tp = TopicPartition(spec.name, partition_for(key, config.kafka.partitions))
            async for message in read_messages(config.kafka.bootstrap_servers, [tp]):
                if payment_id.encode() in message.value or (message.key == payment_id.encode()):
                    found.append((spec.name, trace_id_of(from_headers(message.headers))))
        topics = {topic for topic, _ in found}
        return (
            found
            if {
                "payment.created",
                "wallet.movement_required",
                "wallet.movement_updates",
                "payment.payment_operation.completed",
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
    api_port = wallet_system.wallet_api.port + 100
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
