"""The credentials file: generated once, owner-only, rotated on demand, never shown."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from connectors.config import ConfigError, load_config
from connectors.credentials import (
    PG_ROLES,
    PRINCIPALS,
    ensure_credentials,
    kafka_login,
    postgres_login,
    rotate,
)


@pytest.fixture()
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CREDENTIALS_FILE", str(tmp_path / "secrets" / "credentials.json"))
    return load_config("test", env={})


def test_setup_generates_an_owner_only_file_with_a_password_for_everyone(config) -> None:  # type: ignore[no-untyped-def]
    path = ensure_credentials(config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    passwords = {kafka_login(config, p).password for p in PRINCIPALS} | {
        postgres_login(config, r).password for r in PG_ROLES
    }
    assert len(passwords) == len(PRINCIPALS) + len(PG_ROLES), "every login has its own password"
    assert all(len(p) >= 24 for p in passwords)


def test_ensure_keeps_existing_passwords_and_rotate_changes_only_the_named(config) -> None:  # type: ignore[no-untyped-def]
    ensure_credentials(config)
    before = {p: kafka_login(config, p).password for p in PRINCIPALS}
    ensure_credentials(config)
    assert {p: kafka_login(config, p).password for p in PRINCIPALS} == before
    rotate(config, kafka=["projector"])
    after = {p: kafka_login(config, p).password for p in PRINCIPALS}
    assert after["projector"] != before["projector"]
    assert {p: v for p, v in after.items() if p != "projector"} == {p: v for p, v in before.items() if p != "projector"}


def test_an_unknown_principal_or_a_missing_file_is_an_error_that_says_what_to_do(config) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="run `make run`"):
        kafka_login(config, "projector")
    ensure_credentials(config)
    with pytest.raises(ConfigError, match="unknown kafka principal"):
        kafka_login(config, "mallory")


def test_a_login_never_shows_its_password(config) -> None:  # type: ignore[no-untyped-def]
    ensure_credentials(config)
    login = kafka_login(config, "console")
    assert login.password not in repr(login) and login.password not in str(login)
