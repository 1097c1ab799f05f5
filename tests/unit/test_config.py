"""Configuration: JSON per environment, environment overrides, errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors import config as config_module
from connectors.config import CONFIG_DIR, ConfigError, load_config


@pytest.mark.parametrize("environment", sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
def test_every_shipped_environment_file_is_valid(environment: str) -> None:
    assert load_config(environment, env={}).environment == environment


def test_local_defaults_follow_the_readme() -> None:
    config = load_config("local", env={})
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert (config.postgres.port, config.payment_api.port, config.wallet_api.port) == (5433, 8080, 8081)


def test_environment_picks_the_file() -> None:
    assert load_config(env={"ENVIRONMENT": "dev"}).kafka.bootstrap_servers.startswith("kafka:")


def test_environment_variables_override_any_key_with_its_type() -> None:
    config = load_config("local", env={"POSTGRES_PORT": "6000", "KAFKA_PARTITIONS": "3", "LOG_JSON": "true"})
    assert (config.postgres.port, config.kafka.partitions, config.log.json) == (6000, 3, True)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"POSTGRES_PORT": "abc"}, "postgres.port"),
        ({"LOG_JSON": "maybe"}, "log.json"),
        ({"PROCESSING_MAX_ATTEMPTS": "2.5"}, "processing.max_attempts"),
    ],
)
def test_a_bad_value_names_the_key_and_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config("local", env=env)
    assert named in str(error.value) and next(iter(env)) in str(error.value)


def test_an_unknown_environment_lists_the_choices() -> None:
    with pytest.raises(ConfigError) as error:
        load_config("nope", env={})
    assert "local" in str(error.value)


def test_a_database_password_in_a_config_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords live in the credentials file only (connectors/credentials.py): an old config
    that still carries postgres.user/password fails loudly instead of being half used."""
    raw = json.loads((config_module.CONFIG_DIR / "local.json").read_text())
    raw["postgres"]["password"] = "s3cret"
    (tmp_path / "old.json").write_text(json.dumps(raw))
    monkeypatch.setattr(config_module, "CONFIG_DIR", tmp_path)
    with pytest.raises(ConfigError) as error:
        load_config("old", env={})
    assert "postgres.password" in str(error.value) and "s3cret" not in str(error.value)
