"""Stripe behind the provider port, through Stripe's official SDK (its async client).

A charge is a PaymentIntent created and confirmed at once with the payment method the
payment carries (`token`, e.g. pm_card_visa in test mode); a refund goes through the
Refunds API against that PaymentIntent. Our operation id is Stripe's Idempotency-Key and
also rides in the object's metadata with the payment id, which is how a webhook finds its
payment and operation again (services/provider_webhooks.py).

The SDK's own retries are off: retries, timeout and circuit breaker are the port's
(CallPolicy), the same for every provider. Nothing the SDK raises reaches a log or an
event unredacted: an error message can echo the key (stripe-mock's does).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import stripe

from connectors.config import ProviderConfig, StripeConfig
from connectors.provider_client import CallPolicy, ProviderAnswer, ProviderRejected, ProviderUnavailable
from connectors.stripe_secrets import StripeSecrets

NAME = "stripe"
# Stripe answers 409 to a second request with a key whose first request is still running.
BUSY_CODES = frozenset({"lock_timeout", "idempotency_key_in_use"})


class StripeProvider:
    name = NAME

    def __init__(self, provider: ProviderConfig, config: StripeConfig, secrets: StripeSecrets) -> None:
        self.policy = CallPolicy(provider, NAME)
        self.timeout_s = provider.request_timeout_s
        self.api_base = config.api_base
        self.secrets = secrets
        self.http: stripe.AIOHTTPClient | None = None
        self.client: stripe.StripeClient | None = None

    def _client(self) -> stripe.StripeClient:
        # Made on first use: the SDK's aiohttp session belongs to the running event loop.
        if self.client is None:
            self.http = stripe.AIOHTTPClient(timeout=self.timeout_s)
            self.client = stripe.StripeClient(
                self.secrets.secret_key,
                base_addresses={"api": self.api_base},
                http_client=self.http,
                max_network_retries=0,
            )
        return self.client

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close_async()
            self.http, self.client = None, None

    async def charge(
        self, idempotency_key: str, payment_id: str, amount: int, currency: str, token: str
    ) -> ProviderAnswer:
        params: Any = {
            "amount": amount,
            "currency": currency.lower(),
            "payment_method": token,
            "confirm": True,
            # Confirmed by the server, with no customer present to follow a redirect.
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "metadata": {"payment_id": payment_id, "operation_id": idempotency_key},
        }
        create = self._client().v1.payment_intents.create_async
        return await self.policy.call("charge", lambda: self._send(create, params, idempotency_key))

    async def refund(
        self, idempotency_key: str, payment_id: str, charge: str, amount: int, currency: str
    ) -> ProviderAnswer:
        # The charge reference is the PaymentIntent (a Charge id also works, as Stripe allows both).
        target = "charge" if charge.startswith("ch_") else "payment_intent"
        params: Any = {
            target: charge,
            "amount": amount,
            "metadata": {"payment_id": payment_id, "operation_id": idempotency_key},
        }
        create = self._client().v1.refunds.create_async
        return await self.policy.call("refund", lambda: self._send(create, params, idempotency_key))

    async def _send(
        self, create: Callable[..., Awaitable[Any]], params: dict[str, Any], idempotency_key: str
    ) -> ProviderAnswer:
        try:
            made = await create(params, {"idempotency_key": idempotency_key})
        except stripe.StripeError as exc:
            raise self.translate(exc) from None  # the SDK's traceback may hold the request's headers
        except TimeoutError as exc:
            raise ProviderUnavailable("no answer from Stripe in time") from exc
        return ProviderAnswer(
            made.id,
            made.status,
            made.amount,
            made.currency.upper(),
            made.last_response.headers.get("Idempotency-Key") if made.last_response else None,
        )

    def translate(self, exc: stripe.StripeError) -> ProviderRejected | ProviderUnavailable:
        """A refusal is final (ProviderRejected); an outage, a rate limit or a busy key may pass."""
        error = exc.json_body.get("error") if isinstance(exc.json_body, dict) else None
        details = error if isinstance(error, dict) else {}
        code = str(details.get("code") or exc.code or "")
        message = self.secrets.redact(str(details.get("message") or exc.user_message or type(exc).__name__))
        status = exc.http_status
        if status is None or status >= 500 or status == 429 or (status == 409 and code in BUSY_CODES):
            return ProviderUnavailable(f"Stripe {type(exc).__name__} ({status}): {message}")
        body = {"type": details.get("type"), "code": code or None, "message": message}
        if details.get("decline_code"):
            body["decline_code"] = details["decline_code"]
        # The same reason code as the payment_intent.payment_failed that follows (code, then decline code).
        declined = (
            (code or details.get("decline_code") or "card_declined") if isinstance(exc, stripe.CardError) else None
        )
        return ProviderRejected(status, body, str(declined) if declined else None)
