"""The gateway serves both APIs' OpenAPI documents, valid OpenAPI 3.1, the same as the services
serve, and a docs page naming every operation; without a credential."""

from __future__ import annotations

import html
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate

from connectors.config import Config
from tests.conftest import ensure_running


@pytest.fixture(scope="module")
def gateway_url(payment_system: Config, supervisor: Any) -> str:
    ensure_running(payment_system, supervisor, "gateway")
    return f"http://127.0.0.1:{payment_system.gateway.port}"


@pytest.mark.parametrize(("name", "service"), [("payments", "payment_api"), ("wallets", "wallet_api")])
async def test_the_gateway_serves_each_api_s_document(
    gateway_url: str, config: Config, http: aiohttp.ClientSession, name: str, service: str
) -> None:
    async with http.get(f"{gateway_url}/api/v1/openapi/{name}.json") as response:
        assert response.status == 200 and response.headers["X-Request-Id"]
        document = await response.json()
    validate(document)
    async with http.get(f"http://127.0.0.1:{getattr(config, service).port}/openapi.json") as response:
        assert document == await response.json()


async def test_an_unknown_document_is_404_with_the_error_body(gateway_url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway_url}/api/v1/openapi/ledger.json") as response:
        body = await response.json()
    assert response.status == 404 and body["error"]["field"] == "name"
    assert body["error"]["request_id"] == response.headers["X-Request-Id"]


async def test_the_docs_page_lists_every_operation_of_both_documents(
    gateway_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway_url}/api/docs") as response:
        assert response.status == 200 and response.content_type == "text/html"
        page = await response.text()
    for name in ("payments", "wallets"):
        async with http.get(f"{gateway_url}/api/v1/openapi/{name}.json") as response:
            document = await response.json()
        for path, methods in document["paths"].items():
            for method, operation in methods.items():
                heading = f"<span class='method'>{method.upper()}</span> <span class='path'>{html.escape(path)}</span>"
                assert heading in page, (method, path)
                assert html.escape(operation["summary"], quote=True) in page
    assert "<script" not in page and "http://" not in page and "https://" not in page, "nothing fetched from elsewhere"
    assert "Request fields (JSON body)" in page and "Errors" in page
