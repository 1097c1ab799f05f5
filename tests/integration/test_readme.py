"""README's "Try it" works when followed literally: its bash block runs as written, through
the gateway of the test environment (the only change: the gateway's port), and each request
answers the status its comment (`# -> NNN`) promises."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from connectors.config import Config
from tests.conftest import ensure_running

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = re.compile(r"^# -> (\d{3})", re.MULTILINE)
# Every curl of the block reports its status on stderr; what it prints is left as it is.
PRELUDE = """set -euo pipefail
curl() { command curl -sS -w '%{stderr}HTTP %{http_code}\\n' "$@"; }
"""


def try_it_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Try it") :]
    match = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert match, "README's Try it has a bash block"
    return match.group(1)


def test_the_block_has_a_status_for_every_request() -> None:
    block = try_it_block()
    requests = len(re.findall(r"^(?:\S+=\$\()?curl ", block, re.MULTILINE))
    assert requests == len(EXPECTED.findall(block)) >= 8


@pytest.fixture(scope="module")
def gateway(payment_system: Config, supervisor: Any) -> Config:
    ensure_running(payment_system, supervisor, "gateway")
    return payment_system


def test_try_it_runs_as_written_and_every_answer_is_the_promised_one(gateway: Config) -> None:
    block = try_it_block()
    script = PRELUDE + block.replace("http://localhost:8000", f"http://127.0.0.1:{gateway.gateway.port}")
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=180)
    statuses = re.findall(r"^HTTP (\d{3})$", done.stderr, re.MULTILINE)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert statuses == EXPECTED.findall(block), (statuses, done.stdout, done.stderr)
    assert "reached terminal PaymentSucceeded" in done.stdout, done.stdout
    assert re.search(r"request try-it-card-payment-1: payment [0-9a-f-]{36}", done.stdout), done.stdout
