"""Stripe's keys: only from the environment or a secrets file, never shown, and Stripe itself
only where a deployment offers it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from connectors.config import CONFIG_DIR, Config, ConfigError, load_config
from connectors.providers import offered
from connectors.stripe_secrets import StripeSecrets, load_stripe_secrets, secrets_path, write_secrets_file

KEY = "sk_test_51UnitTestKeyAbc"
WEBHOOK = "whsec_unitTestWebhookSecret"


def with_file(config: Config, path: Path) -> Config:
    return dataclasses.replace(config, stripe=dataclasses.replace(config.stripe, secrets_file=str(path)))


def test_the_environment_holds_them() -> None:
    config = load_config("test", env={})
    found = load_stripe_secrets(config, {"STRIPE_SECRET_KEY": KEY, "STRIPE_WEBHOOK_SECRET": WEBHOOK})
    assert (found.secret_key, found.webhook_secret) == (KEY, WEBHOOK)


def test_a_secrets_file_holds_them_and_the_environment_wins(tmp_path: Path) -> None:
    path = tmp_path / "stripe.secrets"
    path.write_text(f'# test mode\nSTRIPE_SECRET_KEY="{KEY}"\n\nSTRIPE_WEBHOOK_SECRET={WEBHOOK}\n')
    config = with_file(load_config("test", env={}), path)
    assert load_stripe_secrets(config, {}) == StripeSecrets(KEY, WEBHOOK)
    assert load_stripe_secrets(config, {"STRIPE_WEBHOOK_SECRET": "whsec_env"}).webhook_secret == "whsec_env"
    assert secrets_path(config, {"STRIPE_SECRETS_FILE": "/elsewhere"}) == Path("/elsewhere")


def test_written_secrets_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "made" / "stripe.secrets"
    write_secrets_file(path, StripeSecrets(KEY, WEBHOOK))
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_stripe_secrets(with_file(load_config("test", env={}), path), {}) == StripeSecrets(KEY, WEBHOOK)


def test_missing_secrets_are_named_never_shown(tmp_path: Path) -> None:
    config = with_file(load_config("test", env={}), tmp_path / "absent")
    with pytest.raises(ConfigError) as refused:
        load_stripe_secrets(config, {"STRIPE_SECRET_KEY": KEY})
    assert "STRIPE_WEBHOOK_SECRET" in str(refused.value) and KEY not in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        load_stripe_secrets(config, {"STRIPE_SECRET_KEY": "pk_test_publishable", "STRIPE_WEBHOOK_SECRET": WEBHOOK})
    assert "pk_test" not in str(refused.value)


def test_secrets_never_show_in_their_repr_or_in_text_they_redact() -> None:
    secrets = StripeSecrets(KEY, WEBHOOK)
    assert KEY not in repr(secrets) and WEBHOOK not in repr(secrets)
    echoed = f"Authorization was 'Bearer {KEY}', other rk_live_AbC123 and sk_test_zz, webhook {WEBHOOK}"
    cleaned = secrets.redact(echoed)
    assert all(s not in cleaned for s in (KEY, "rk_live_AbC123", "sk_test_zz", WEBHOOK)), cleaned


def test_no_configuration_file_in_the_repository_holds_a_stripe_key() -> None:
    for path in CONFIG_DIR.glob("*.json"):
        if not path.name.startswith("scratch-"):  # git-ignored, per checkout
            assert "sk_" not in path.read_text() and "STRIPE_" not in path.read_text(), path


def test_stripe_is_offered_only_where_the_deployment_enables_it() -> None:
    assert offered(load_config("local", env={})) == ("simulator",)
    assert offered(load_config("test", env={})) == ("simulator", "stripe")
    assert offered(load_config("test", env={"STRIPE_ENABLED": "false"})) == ("simulator",)


def test_an_environment_without_a_stripe_section_has_stripe_off() -> None:
    config = load_config("dev", env={})
    assert config.stripe.enabled is False and config.stripe.api_base == "https://api.stripe.com"
