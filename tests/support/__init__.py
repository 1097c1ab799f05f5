"""Test support: the real services of the test environment, and polling helpers."""

from __future__ import annotations

import asyncio
import json as json_module
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")
# What a raw body sent with `data=` needs to be read as JSON (aiohttp labels bytes octet-stream).
JSON = {"Content-Type": "application/json"}


def free_port() -> int:
    """A port nothing listens on now: a fixed offset from ours may be another checkout's port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def eventually(
    check: Callable[[], Awaitable[T | None]], timeout: float = 20.0, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll until check() returns something truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Api:
    """A tiny JSON client for one service, sending one credential (a bearer token) if given."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str | None = None) -> None:
        self.session, self.base_url, self.token = session, base_url, token

    def as_(self, token: str | None) -> Api:
        """The same service, called with another credential (None: none at all)."""
        return Api(self.session, self.base_url, token)

    async def request(
        self, method: str, path: str, json: Any = None, data: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        sent = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        sent.update(headers or {})
        async with self.session.request(method, self.base_url + path, json=json, data=data, headers=sent) as response:
            text = await response.text()
            try:
                return response.status, json_module.loads(text)
            except ValueError:  # a plain-text error page: keep it for the assertion message
                return response.status, text

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.request("GET", path)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("POST", path, json=json, **kwargs)
