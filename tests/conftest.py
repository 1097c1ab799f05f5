"""Shared fixtures. Integration tests need the test environment's real Kafka and
PostgreSQL, which `make test` starts (ENVIRONMENT=test, ports 19092 and 15433)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from connectors.auth import issue_token
from connectors.config import Config, load_config
from devtools.devctl import Process, Supervisor, processes
from devtools.localinfra import kafka_reachable
from tests.support import Api


@pytest.fixture(scope="session")
def config() -> Config:
    cfg = load_config()
    if cfg.environment in ("local", "dev"):
        # Tests start and kill workers; never do that to the system `make run` started.
        pytest.exit("integration tests run in the test environment: use `make test` (ENVIRONMENT=test)", 2)
    if not kafka_reachable(cfg):
        pytest.exit(f"no Kafka on {cfg.kafka.bootstrap_servers}: use `make test`, which starts it", 2)
    return cfg


@pytest.fixture(scope="session")
def supervisor(config: Config) -> Iterator[Supervisor]:
    supervisor = Supervisor(config)
    yield supervisor
    for process in reversed(processes(config)):
        supervisor.stop(process.name)


def process_named(config: Config, name: str) -> Process:
    return next(p for p in processes(config) if p.name == name)


def ensure_running(config: Config, supervisor: Supervisor, *names: str) -> None:
    for name in names:
        supervisor.start(process_named(config, name))
    for name in names:
        supervisor.wait_healthy(process_named(config, name))


@pytest.fixture(scope="session")
def wallet_system(config: Config, supervisor: Supervisor) -> Config:
    """Wallet worker, projector and wallet API of the test environment, running."""
    ensure_running(config, supervisor, "wallet-worker", "projector", "wallet-api")
    return config


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def admin_token(config: Config) -> str:
    """The tests act as an admin unless they test the roles themselves."""
    return issue_token(config.auth, "test-admin", ["admin"])


@pytest.fixture(scope="session")
def wallet_api(wallet_system: Config, http: aiohttp.ClientSession) -> Api:
    return Api(http, f"http://127.0.0.1:{wallet_system.wallet_api.port}", admin_token(wallet_system))


@pytest.fixture(scope="session")
def payment_system(wallet_system: Config, supervisor: Supervisor) -> Config:
    """The wallet system plus payment worker, payment API and provider simulator, running."""
    ensure_running(wallet_system, supervisor, "provider-simulator", "payment-worker", "payment-api")
    return wallet_system


@pytest.fixture(scope="session")
def payment_api(payment_system: Config, http: aiohttp.ClientSession) -> Api:
    return Api(http, f"http://127.0.0.1:{payment_system.payment_api.port}", admin_token(payment_system))
