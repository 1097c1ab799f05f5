"""The provider port and how every adapter calls its provider: timeouts, bounded retries
with backoff, a circuit breaker, and our operation id as the idempotency key, so a
retried charge or refund is still one charge or refund at the provider. The simulator's
HTTP client lives here; the Stripe adapter in connectors/stripe_provider.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import aiohttp

from connectors.config import ProviderConfig
from connectors.metrics import PROVIDER_CALLS

log = logging.getLogger(__name__)


class ProviderUnavailable(RuntimeError):
    """No usable answer: timeouts, 5xx, or the circuit is open. Safe to retry later."""


class ProviderRejected(RuntimeError):
    """The provider refused the request (4xx); retrying the same request will not help."""

    def __init__(self, status: int, body: Any, decline_code: str | None = None) -> None:
        super().__init__(f"provider refused the request ({status}): {body}")
        # A card declined while the charge was confirmed: the payment fails with this code, as
        # it would by a webhook, instead of the generic provider_rejected.
        self.status, self.body, self.decline_code = status, body, decline_code


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


@dataclass(frozen=True)
class ProviderAnswer:
    """A provider's immediate answer to a charge or refund. The saga does not act on it: the
    outcome arrives by webhook (a refusal, raised as ProviderRejected, is the exception)."""

    reference: str  # the provider's id of the object it made (charge, PaymentIntent, refund)
    status: str  # the provider's own word for the object now
    amount: int  # minor units, as the provider recorded them
    currency: str  # ISO 4217, upper case
    idempotency_key: str | None  # the key the provider says it received


class PaymentProvider(Protocol):
    """The provider port: the simulator's client and the Stripe adapter both serve it, and
    tests/integration/test_provider_contract.py holds each to the same contract."""

    name: str

    async def charge(
        self, idempotency_key: str, payment_id: str, amount: int, currency: str, token: str
    ) -> ProviderAnswer: ...

    async def refund(
        self, idempotency_key: str, payment_id: str, charge: str, amount: int, currency: str
    ) -> ProviderAnswer: ...

    async def stop(self) -> None: ...


T = TypeVar("T")


class CallPolicy:
    """How every adapter calls its provider: bounded attempts with backoff, each under the
    adapter's timeout, behind one circuit breaker. An attempt raises ProviderUnavailable for
    what may pass (retried) and ProviderRejected for a refusal (final, and not a failure of
    the provider)."""

    def __init__(self, config: ProviderConfig, provider: str) -> None:
        self.config, self.provider = config, provider
        self.breaker = CircuitBreaker(config.breaker_threshold, config.breaker_reset_s)

    async def call(self, operation: Literal["charge", "refund"], attempt: Callable[[], Awaitable[T]]) -> T:
        try:
            answer = await self._attempts(operation, attempt)
        except ProviderRejected:
            PROVIDER_CALLS.labels(self.provider, operation, "rejected").inc()
            raise
        except ProviderUnavailable:
            PROVIDER_CALLS.labels(self.provider, operation, "unavailable").inc()
            raise
        PROVIDER_CALLS.labels(self.provider, operation, "accepted").inc()
        return answer

    async def _attempts(self, operation: str, attempt: Callable[[], Awaitable[T]]) -> T:
        what = f"{self.provider} {operation}"
        last: Exception | None = None
        for number in range(1, self.config.max_attempts + 1):
            if not self.breaker.allow():
                raise ProviderUnavailable("circuit open: the provider failed repeatedly; not calling it")
            try:
                answer = await attempt()
                self.breaker.success()
                return answer
            except ProviderRejected:
                self.breaker.success()  # the provider is healthy; it just said no
                raise
            except ProviderUnavailable as exc:
                last = exc
            self.breaker.failure()
            log.warning("provider %s attempt %d/%d failed: %r", what, number, self.config.max_attempts, last)
            if number < self.config.max_attempts:
                await asyncio.sleep(self.config.backoff_s * 2 ** (number - 1))
        raise ProviderUnavailable(f"provider {what} failed {self.config.max_attempts} times: {last!r}")


class ProviderClient:
    """The provider simulator's HTTP API (simulator/provider.py)."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.name = config.name
        self.policy = CallPolicy(config, config.name)
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.request_timeout_s))

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def charge(
        self, idempotency_key: str, payment_id: str, amount: int, currency: str, token: str
    ) -> ProviderAnswer:
        body = {
            "amount": amount,
            "currency": currency,
            "token": token,
            "metadata": {"payment_id": payment_id, "operation_id": idempotency_key},
        }
        return await self._post("charge", "/v1/charges", idempotency_key, body)

    async def refund(
        self, idempotency_key: str, payment_id: str, charge: str, amount: int, currency: str
    ) -> ProviderAnswer:
        body = {
            "charge": charge,
            "amount": amount,
            "currency": currency,
            "metadata": {"payment_id": payment_id, "operation_id": idempotency_key},
        }
        return await self._post("refund", "/v1/refunds", idempotency_key, body)

    async def _post(
        self, operation: Literal["charge", "refund"], path: str, idempotency_key: str, body: dict[str, Any]
    ) -> ProviderAnswer:
        if self.session is None:  # created lazily: a session must be made inside the running loop
            await self.start()
        assert self.session is not None
        session = self.session

        async def attempt() -> ProviderAnswer:
            try:
                async with session.post(
                    self.config.base_url + path, json=body, headers={"Idempotency-Key": idempotency_key}
                ) as response:
                    answer = await response.json(content_type=None)
                    if response.status < 400:
                        return ProviderAnswer(
                            str(answer["id"]),
                            str(answer["status"]),
                            int(answer["amount"]),
                            str(answer["currency"]),
                            response.headers.get("Idempotency-Key"),
                        )
                    if response.status < 500 and response.status != 429:
                        raise ProviderRejected(response.status, answer)
                    raise ProviderUnavailable(f"provider answered {response.status}")
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
                raise ProviderUnavailable(repr(exc)) from exc

        return await self.policy.call(operation, attempt)
