"""Stripe's API key and webhook signing secret: from the environment or a secrets file,
never from the configuration files in the repository, never in a log line or an event.

    STRIPE_SECRET_KEY=sk_test_...        the API key (sk_... or a restricted rk_... key)
    STRIPE_WEBHOOK_SECRET=whsec_...      the signing secret of the webhook endpoint

Each is read from the environment first, then from the secrets file: `STRIPE_SECRETS_FILE`,
else `stripe.secrets_file`, else `.local/<environment>/stripe.secrets` (git-ignored). The
file holds the same NAME=value lines; `make test` writes one for the local stripe-mock.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from connectors.config import ROOT, Config, ConfigError, state_dir

KEY_NAME = "STRIPE_SECRET_KEY"
WEBHOOK_NAME = "STRIPE_WEBHOOK_SECRET"
FILE_NAME = "STRIPE_SECRETS_FILE"
# Anything that looks like a Stripe secret or restricted key, wherever it turns up in text.
KEY_PATTERN = re.compile(r"\b(?:sk|rk)_(?:test|live)_[0-9A-Za-z]+")


@dataclass(frozen=True)
class StripeSecrets:
    secret_key: str
    webhook_secret: str

    def __repr__(self) -> str:  # keeps both out of logs and tracebacks
        return "StripeSecrets(<hidden>)"

    def redact(self, text: str) -> str:
        """`text` without the key or anything shaped like one (a provider may echo what it was sent)."""
        for secret in (self.secret_key, self.webhook_secret):
            text = text.replace(secret, "<redacted>")
        return KEY_PATTERN.sub("<redacted>", text)


def secrets_path(config: Config, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    named = env.get(FILE_NAME) or config.stripe.secrets_file
    if named:
        path = Path(named)
        return path if path.is_absolute() else ROOT / path
    return state_dir(config) / "stripe.secrets"


def read_secrets_file(path: Path) -> dict[str, str]:
    """NAME=value lines; blank lines and # comments are skipped, surrounding quotes removed."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if not equals:
            raise ConfigError(f"{path}:{number}: expected NAME=value")  # the line itself may be a secret
        values[name.strip()] = value.strip().strip("'\"")
    return values


def write_secrets_file(path: Path, secrets: StripeSecrets) -> None:
    """Readable by the owner only, created that way so that it is never readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(f"{KEY_NAME}={secrets.secret_key}\n{WEBHOOK_NAME}={secrets.webhook_secret}\n")


def load_stripe_secrets(config: Config, env: Mapping[str, str] | None = None) -> StripeSecrets:
    """Both secrets, or a ConfigError that says where they were looked for (never what was found)."""
    env = os.environ if env is None else env
    path = secrets_path(config, env)
    from_file = read_secrets_file(path) if path.exists() else {}
    found = {name: env.get(name) or from_file.get(name, "") for name in (KEY_NAME, WEBHOOK_NAME)}
    missing = [name for name, value in found.items() if not value]
    if missing:
        raise ConfigError(
            f"stripe is enabled but {' and '.join(missing)} is not set: put it in the environment or in {path}"
        )
    if not found[KEY_NAME].startswith(("sk_", "rk_")):
        raise ConfigError(f"{KEY_NAME} must be a Stripe secret (sk_...) or restricted (rk_...) key")
    return StripeSecrets(found[KEY_NAME], found[WEBHOOK_NAME])
