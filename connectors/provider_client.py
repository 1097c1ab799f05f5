"""HTTP client of the external payment provider: timeouts, bounded retries with
backoff, a circuit breaker, and our operation id as the idempotency key, so a
retried charge or refund is still one charge or refund at the provider."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from connectors.config import ProviderConfig

log = logging.getLogger(__name__)


class ProviderUnavailable(RuntimeError):
    """No usable answer: timeouts, 5xx, or the circuit is open. Safe to retry later."""


class ProviderRejected(RuntimeError):
    """The provider refused the request (4xx); retrying the same request will not help."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"provider refused the request ({status}): {body}")
        self.status, self.body = status, body


@dataclass
class CircuitBreaker:
    """Opens after `threshold` consecutive failures; lets one trial call through after `reset_s`."""

    threshold: int
    reset_s: float
    failures: int = 0
    opened_at: float | None = None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        return time.monotonic() - self.opened_at >= self.reset_s

    def success(self) -> None:
        self.failures, self.opened_at = 0, None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = time.monotonic()


class ProviderClient:
    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.breaker = CircuitBreaker(config.breaker_threshold, config.breaker_reset_s)
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.request_timeout_s))

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def charge(
        self, idempotency_key: str, payment_id: str, amount: int, currency: str, token: str
    ) -> dict[str, Any]:
        body = {
            "amount": amount,
            "currency": currency,
            "token": token,
            "metadata": {"payment_id": payment_id, "operation_id": idempotency_key},
        }
        return await self._post("/v1/charges", idempotency_key, body)

    async def refund(
        self, idempotency_key: str, payment_id: str, charge: str, amount: int, currency: str
    ) -> dict[str, Any]:
        body = {
            "charge": charge,
            "amount": amount,
            "currency": currency,
            "metadata": {"payment_id": payment_id, "operation_id": idempotency_key},
        }
        return await self._post("/v1/refunds", idempotency_key, body)

    async def _post(self, path: str, idempotency_key: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.session is None:  # created lazily: a session must be made inside the running loop
            await self.start()
        assert self.session is not None
        last: Exception | None = None
        for attempt in range(1, self.config.max_attempts + 1):
            if not self.breaker.allow():
                raise ProviderUnavailable("circuit open: the provider failed repeatedly; not calling it")
            try:
                async with self.session.post(
                    self.config.base_url + path, json=body, headers={"Idempotency-Key": idempotency_key}
                ) as response:
                    answer = await response.json(content_type=None)
                    if response.status < 400:
                        self.breaker.success()
                        return dict(answer)
                    if response.status < 500 and response.status != 429:
                        # The provider is healthy; it just said no.
                        self.breaker.success()
                        raise ProviderRejected(response.status, answer)
                    last = ProviderUnavailable(f"provider answered {response.status}")
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                last = exc
            self.breaker.failure()
            log.warning("provider %s attempt %d/%d failed: %r", path, attempt, self.config.max_attempts, last)
            if attempt < self.config.max_attempts:
                await asyncio.sleep(self.config.backoff_s * 2 ** (attempt - 1))
        raise ProviderUnavailable(f"provider {path} failed {self.config.max_attempts} times: {last!r}")
