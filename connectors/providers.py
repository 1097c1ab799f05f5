"""Which providers a deployment offers, and their adapters by the name a payment gives.

The simulator is always offered under `provider.name`; Stripe when `stripe.enabled`, with
its secrets loaded now, so that a worker missing them refuses to start instead of failing
payments one by one."""

from __future__ import annotations

from connectors.config import Config
from connectors.provider_client import PaymentProvider, ProviderClient
from connectors.stripe_provider import NAME as STRIPE
from connectors.stripe_provider import StripeProvider
from connectors.stripe_secrets import load_stripe_secrets


def offered(config: Config) -> tuple[str, ...]:
    return (config.provider.name, STRIPE) if config.stripe.enabled else (config.provider.name,)


def make_providers(config: Config) -> dict[str, PaymentProvider]:
    providers: dict[str, PaymentProvider] = {config.provider.name: ProviderClient(config.provider)}
    if config.stripe.enabled:
        providers[STRIPE] = StripeProvider(config.provider, config.stripe, load_stripe_secrets(config))
    return providers
