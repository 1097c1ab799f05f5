"""Stripe's own mock server, github.com/stripe/stripe-mock, for environments whose
`stripe.api_base` is a local address (the test environment): built once, pinned, with
`go install` through the Go module proxy into .local/stripe-mock/<version>/, and started
on that address beside Kafka by `localinfra up` (so by `make test` and `make chaos`).

It is stateless (canned objects, requests validated against Stripe's OpenAPI) and sends no
webhooks; the tests sign their own with the environment's test webhook secret, which
`start` writes, with a test API key, to the environment's secrets file when none exists.
`localinfra down` stops it; its log is .local/<environment>/stripe-mock/stripe-mock.log.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from connectors.config import LOCAL, ROOT, Config, state_dir
from connectors.stripe_secrets import KEY_NAME, WEBHOOK_NAME, StripeSecrets, secrets_path, write_secrets_file
from devtools.infra_base import InfraError, read_pid, say, stop_pid

VERSION = "v0.203.0"
MODULE = "github.com/stripe/stripe-mock"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})


def wanted(config: Config) -> bool:
    """Stripe is on and points at this machine: that address is the mock's to serve."""
    address = urlsplit(config.stripe.api_base)
    return config.stripe.enabled and address.scheme == "http" and address.hostname in LOCAL_HOSTS


def address(config: Config) -> tuple[str, int]:
    parts = urlsplit(config.stripe.api_base)
    if parts.hostname is None or parts.port is None:
        raise InfraError(f"stripe.api_base {config.stripe.api_base!r} needs a host and a port for stripe-mock")
    return parts.hostname, parts.port


def binary() -> Path:
    return LOCAL / "stripe-mock" / VERSION / "stripe-mock"


def home(config: Config) -> Path:
    return state_dir(config) / "stripe-mock"


def install() -> Path:
    if binary().exists():
        return binary()
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise InfraError(f"building stripe-mock needs Go on PATH (go install {MODULE}@{VERSION})")
    say(f"building stripe-mock {VERSION} with go install through the Go module proxy (first run only, ~1 min)...")
    started = time.monotonic()
    env = {**os.environ, "GOBIN": str(binary().parent), "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local"}
    built = subprocess.run([go, "install", f"{MODULE}@{VERSION}"], env=env, capture_output=True, text=True)
    if built.returncode != 0 or not binary().exists():
        raise InfraError(
            f"go install {MODULE}@{VERSION} failed; check that the Go module proxy is reachable "
            f"(go env GOPROXY).\n{built.stdout[-2000:]}{built.stderr[-2000:]}"
        )
    say(f"stripe-mock built in {time.monotonic() - started:.0f}s ({binary().stat().st_size // 2**20} MB)")
    return binary()


def ensure_test_secrets(config: Config) -> None:
    """Test-mode credentials for the mock, made up here, so that none is ever in the repository."""
    path = secrets_path(config)
    if path.exists() or (os.environ.get(KEY_NAME) and os.environ.get(WEBHOOK_NAME)):
        return
    write_secrets_file(path, StripeSecrets(f"sk_test_{secrets.token_hex(12)}", f"whsec_{secrets.token_hex(16)}"))
    say(f"stripe-mock test credentials written to {path}")


def answering(config: Config) -> bool:
    host, port = address(config)
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/v1/charges", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # 401 without a key: the mock is up
    except OSError:
        return False


def https_socket(config: Config) -> Path:
    # The mock serves HTTPS on port 12112 of every interface unless told otherwise; a socket of
    # our own keeps it off the network (and a socket path must stay short, so not in .local).
    tag = uuid.uuid5(uuid.NAMESPACE_URL, str(ROOT)).hex[:8]
    return Path(tempfile.gettempdir()) / f"stripe-mock-{config.environment}-{tag}.sock"


def start(config: Config) -> None:
    ensure_test_secrets(config)
    host, port = address(config)
    pid_file = home(config) / "stripe-mock.pid"
    if read_pid(pid_file) or answering(config):
        say(f"stripe-mock already running on {host}:{port}")
        return
    executable = install()
    home(config).mkdir(parents=True, exist_ok=True)
    https_socket(config).unlink(missing_ok=True)
    say(f"starting stripe-mock {VERSION} on {host}:{port}...")
    with open(home(config) / "stripe-mock.log", "ab") as out:
        process = subprocess.Popen(
            [str(executable), "-http-addr", f"{host}:{port}", "-https-unix", str(https_socket(config))],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file.write_text(str(process.pid))
    deadline = time.monotonic() + 30
    while not answering(config):
        if process.poll() is not None or time.monotonic() > deadline:
            raise InfraError(
                f"stripe-mock did not answer on {host}:{port}; see {home(config) / 'stripe-mock.log'} "
                "(is the port taken? set STRIPE_API_BASE)"
            )
        time.sleep(0.2)
    say(f"stripe-mock ready on {host}:{port} (pid {process.pid})")


def stop(config: Config) -> None:
    stop_pid(home(config) / "stripe-mock.pid", "stripe-mock")
    https_socket(config).unlink(missing_ok=True)
