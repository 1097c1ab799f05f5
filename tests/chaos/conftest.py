"""Fault-suite fixtures on top of tests/conftest.py: every service running."""

from __future__ import annotations

import logging

import pytest

from connectors.config import Config
from devtools.devctl import Supervisor


@pytest.fixture(scope="session")
def chaos_system(payment_system: Config, supervisor: Supervisor) -> tuple[Config, Supervisor]:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return payment_system, supervisor
