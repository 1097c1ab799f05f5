"""Configuration: one JSON file per environment, every value overridable by env.

`ENVIRONMENT` picks `config/<environment>.json` (default `local`). Each key
`section.key` can be overridden by the variable `SECTION_KEY` (for example
`POSTGRES_PORT=5434`). Everything is validated at start; an error names the key
and where its bad value came from, so the operator knows what to fix.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "config"
LOCAL = ROOT / ".local"
OPTIONAL_SECTIONS = frozenset({"stripe"})


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str
    controller_port: int
    partitions: int
    schema_registry_url: str


@dataclass(frozen=True)
class PostgresConfig:
    """Where the database is. Who connects, and with which password, is not configuration:
    each process logs in as its own role (connectors/credentials.py, connectors/pg_roles.py)."""

    host: str
    port: int
    database: str


@dataclass(frozen=True)
class ApiConfig:
    host: str
    port: int
    outcome_timeout_s: float
    idempotency_window_s: float  # how long an Idempotency-Key is remembered; after it a key starts afresh
    # Admission: a command is refused (503, Retry-After) while this many wait for their outcome,
    # or while the oldest of them has waited longer than max_behind_s, or once behind while more
    # wait than the saga completes in max_behind_s (services/admission.py).
    max_in_flight: int
    max_behind_s: float
    # Entries of each in-memory cache (verified tokens; the payment API's known wallets), least
    # recently used out: memory stays flat whatever the number of callers and wallets.
    cache_entries: int


@dataclass(frozen=True)
class WorkerConfig:
    web_port: int
    store: str


@dataclass(frozen=True)
class ProcessingConfig:
    max_attempts: int
    retry_backoff_s: float
    commit_interval_s: float
    # A consumer behind the end of a partition that has not advanced for this long is stalled:
    # its readiness turns unready (workers and the projector alike).
    stall_after_s: float
    # An agent takes what its queue holds, up to batch_max events, without waiting for more;
    # the producer waits up to producer_linger_s to fill a batch of records.
    batch_max: int
    producer_linger_s: float
    # Under load (the previous batch held fill_from events or more) a batch waits up to
    # fill_wait_s to fill (streams/batching.py); 0 never waits.
    fill_wait_s: float
    fill_from: int
    event_loop: str  # uvloop or asyncio (connectors/event_loop.py)


@dataclass(frozen=True)
class ProviderConfig:
    """The external payment provider (the simulator locally) and how we talk to it."""

    host: str
    port: int
    name: str
    webhook_secret: str
    webhook_tolerance_s: int
    request_timeout_s: float
    max_attempts: int
    backoff_s: float
    breaker_threshold: int  # consecutive failures that open the circuit
    breaker_reset_s: float
    deadline_s: float  # how long a payment waits on the provider before it fails
    webhook_delay_s: float  # simulator: delay of an ordinary webhook
    late_delay_s: float  # simulator: delay of tok_late_success, past deadline_s

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __repr__(self) -> str:  # keeps the secret out of logs
        return f"ProviderConfig(name={self.name!r}, url={self.base_url!r})"


@dataclass(frozen=True)
class StripeConfig:
    """Stripe as a second provider. Its keys are never here: see connectors/stripe_secrets.py."""

    enabled: bool  # payments may name provider "stripe" in this deployment
    api_base: str  # https://api.stripe.com, or a local stripe-mock that `make test` starts
    secrets_file: str  # where the keys are when not in the environment; "" = .local/<environment>/stripe.secrets
    webhook_tolerance_s: int  # how old a Stripe-Signature timestamp may be (Stripe's default: 300)

    @classmethod
    def disabled(cls) -> StripeConfig:
        return cls(False, "https://api.stripe.com", "", 300)


@dataclass(frozen=True)
class ProjectorConfig:
    metrics_port: int


@dataclass(frozen=True)
class AuditorConfig:
    """The money auditor: when it judges a payment from the log."""

    port: int
    quiet_s: float  # a terminal payment with nothing in flight is judged after this long without news
    grace_s: float  # any payment is judged after this long without news, in flight or not
    # Wallets not changed since the last checkpoint kept in memory, the most recently used ones;
    # the others are read back from PostgreSQL when an event names them.
    wallets_in_memory: int


@dataclass(frozen=True)
class AuthConfig:
    """Who may call the APIs: JWT keys by kid (several active, so keys rotate) and hashed API keys."""

    issuer: str
    audience: str
    signing_kid: str  # the key new tokens are signed with; the others still verify
    jwt_keys: dict[str, str]  # kid -> HS256 secret (>= 32 bytes)
    api_keys: dict[str, str]  # sha256 hex of the key -> "subject:role,role"
    token_ttl_s: int

    def __repr__(self) -> str:  # keeps the keys out of logs
        return f"AuthConfig(issuer={self.issuer!r}, kids={sorted(self.jwt_keys)}, api_keys={len(self.api_keys)})"


@dataclass(frozen=True)
class GatewayConfig:
    host: str
    port: int
    payment_upstream: str  # base URL of the payment API
    wallet_upstream: str
    max_body_bytes: int
    upstream_timeout_s: float
    rate_per_s: float  # sustained requests per second per credential
    cache_entries: int  # verified tokens remembered, least recently used out
    burst: int  # requests a credential may send at once before the rate applies
    upstream_connections: int  # connections to each API for ordinary requests, apart from long-polls
    max_waits: int  # long-polls (?wait>0) parked at once in all, and each API's long-poll connections
    max_waits_per_credential: int  # long-polls one credential may park at once (429 beyond)


@dataclass(frozen=True)
class WebConsoleConfig:
    """The operators' web console (console/web.py), reached through the gateway at /console/."""

    host: str
    port: int
    url: str  # where the gateway reaches it
    session_ttl_s: int  # the login cookie's lifetime


@dataclass(frozen=True)
class LogConfig:
    level: str
    json: bool


@dataclass(frozen=True)
class Config:
    environment: str
    kafka: KafkaConfig
    postgres: PostgresConfig
    wallet_api: ApiConfig
    payment_api: ApiConfig
    wallet_worker: WorkerConfig
    payment_worker: WorkerConfig
    processing: ProcessingConfig
    projector: ProjectorConfig
    auditor: AuditorConfig
    provider: ProviderConfig
    auth: AuthConfig
    gateway: GatewayConfig
    web_console: WebConsoleConfig
    log: LogConfig = field(default_factory=lambda: LogConfig("INFO", False))
    # Optional: a deployment without this section has no Stripe.
    stripe: StripeConfig = field(default_factory=StripeConfig.disabled)


def load_config(environment: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    environment = environment or env.get("ENVIRONMENT", "local")
    path = CONFIG_DIR / f"{environment}.json"
    if not path.exists():
        choices = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
        raise ConfigError(f"ENVIRONMENT={environment!r}: no {path}; choose one of: {choices}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    sections: dict[str, Any] = {"environment": environment}
    for section in dataclasses.fields(Config):
        if section.name == "environment":
            continue
        values = raw.pop(section.name, None)
        if values is None and section.name in OPTIONAL_SECTIONS:
            continue
        if values is None:
            raise ConfigError(f"{path}: missing section {section.name!r}")
        sections[section.name] = _build_section(section.type, section.name, values, env, path)
    if raw:
        raise ConfigError(f"{path}: unknown section(s) {sorted(raw)}")
    return Config(**sections)


def _build_section(type_name: Any, name: str, values: dict[str, Any], env: Mapping[str, str], path: Path) -> Any:
    cls = globals()[type_name] if isinstance(type_name, str) else type_name
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(f'{name}.{k}' for k in unknown)}")
    kwargs = {}
    for key, spec in known.items():
        env_name = f"{name}_{key}".upper()
        if env_name in env:
            value: Any = env[env_name]
            source = f"environment variable {env_name}"
        elif key in values:
            value, source = values[key], str(path)
        else:
            raise ConfigError(f"config key {name}.{key} is missing in {path} (or set {env_name})")
        kwargs[key] = _coerce(value, spec.type, f"config key {name}.{key} (from {source})")
    return cls(**kwargs)


def _coerce(value: Any, type_name: Any, where: str) -> Any:
    expected = type_name if isinstance(type_name, str) else type_name.__name__
    try:
        if expected == "dict[str, str]":
            # An environment variable carries the mapping as JSON, e.g. AUTH_JWT_KEYS='{"k2": "..."}'.
            mapping = json.loads(value) if isinstance(value, str) else value
            if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
                raise ValueError("not an object of strings")
            return {str(k): v for k, v in mapping.items()}
        if expected == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in {"1", "true", "yes", "on"}:
                return True
            if str(value).lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(value)
        if expected == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if expected == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if value is None:
            return ""
        return str(value)
    except (TypeError, ValueError):
        shown = "<hidden>" if expected.startswith("dict") else repr(value)  # mappings hold secrets
        raise ConfigError(f"{where}: expected {expected}, got {shown}") from None


def state_dir(config: Config) -> Path:
    """Each environment (local, test) has its own broker data, cluster and worker stores, so the
    test suite never disturbs a system started with `make run`."""
    return LOCAL / config.environment
