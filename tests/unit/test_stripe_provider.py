"""How the Stripe adapter reads the SDK's errors: a refusal is final, an outage may pass, and
neither carries a key. Pure: the SDK's exceptions are built as its requestor builds them."""

from __future__ import annotations

import pytest
import stripe

from connectors.config import load_config
from connectors.provider_client import ProviderRejected, ProviderUnavailable
from connectors.stripe_provider import StripeProvider
from connectors.stripe_secrets import StripeSecrets

KEY = "sk_test_51UnitKey"
config = load_config("test", env={})
adapter = StripeProvider(config.provider, config.stripe, StripeSecrets(KEY, "whsec_unit"))


def body(**error: str) -> dict[str, dict[str, str]]:
    return {"error": error}


def test_a_card_declined_while_confirming_is_final_with_the_decline_code() -> None:
    declined = stripe.CardError(
        "Your card was declined.", None, "card_declined", http_status=402,
        json_body=body(type="card_error", code="card_declined", decline_code="insufficient_funds",
                       message="Your card was declined."),
    )  # fmt: skip
    translated = adapter.translate(declined)
    assert isinstance(translated, ProviderRejected)
    assert (translated.status, translated.decline_code) == (402, "card_declined")
    assert translated.body["decline_code"] == "insufficient_funds"


def test_a_refused_key_is_final_and_never_repeated() -> None:
    message = f"Invalid API Key provided: {KEY}; Authorization was 'Bearer {KEY}'"
    refused = stripe.AuthenticationError(message, http_status=401, json_body=body(message=message))
    translated = adapter.translate(refused)
    assert isinstance(translated, ProviderRejected) and translated.decline_code is None
    assert KEY not in str(translated) and "sk_test_" not in str(translated)


@pytest.mark.parametrize(
    "error",
    [
        stripe.InvalidRequestError("No such payment_intent", "payment_intent", http_status=404),
        stripe.IdempotencyError("Keys for idempotent requests can only be used with the same parameters",
                                http_status=400, json_body=body(type="idempotency_error")),
        stripe.PermissionError("restricted key", http_status=403),
    ],
)  # fmt: skip
def test_other_refusals_are_final(error: stripe.StripeError) -> None:
    assert isinstance(adapter.translate(error), ProviderRejected)


@pytest.mark.parametrize(
    "error",
    [
        stripe.APIConnectionError("Network error: A ClientConnectorError was raised"),
        stripe.RateLimitError("Too many requests", http_status=429),
        stripe.APIError("Something went wrong on Stripe's end", http_status=500),
        stripe.InvalidRequestError("busy", None, code="lock_timeout", http_status=409,
                                   json_body=body(code="lock_timeout", message="busy")),
    ],
)  # fmt: skip
def test_outages_limits_and_a_key_in_use_may_pass(error: stripe.StripeError) -> None:
    assert isinstance(adapter.translate(error), ProviderUnavailable)
