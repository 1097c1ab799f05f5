"""A real Confluent-compatible schema registry without Docker: Apicurio Registry 3.

Maven resolves the server distribution (a Quarkus app, ~160 MB) from Maven Central
(a pom in `devtools/infra/apicurio/`); it is unpacked into `.local/apicurio` and run
with Java 17, schemas kept in memory. Only `make test-registry` needs it.

    python -m devtools.registry install
    python -m devtools.registry run [--port N] -- COMMAND...   # COMMAND sees REGISTRY_URL
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devtools.localinfra import LOCAL, ROOT, InfraError

APICURIO_POM = ROOT / "devtools" / "infra" / "apicurio" / "pom.xml"
APICURIO_HOME = LOCAL / "apicurio"
# Where Apicurio serves the Confluent API; config's kafka.schema_registry_url ends with it.
CCOMPAT_PATH = "/apis/ccompat/v7"
DEFAULT_PORT = 18180
URL_VARIABLE = "REGISTRY_URL"


def say(message: str) -> None:
    print(f"[registry] {message}", flush=True)


def apicurio_ready() -> bool:
    marker = APICURIO_HOME / ".resolved"
    return marker.exists() and marker.stat().st_mtime >= APICURIO_POM.stat().st_mtime


def install_apicurio() -> None:
    if apicurio_ready():
        return
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise InfraError("the registry needs Java 17 and Maven on PATH (apt-get install maven openjdk-17-jdk-headless)")
    say("resolving Apicurio Registry from Maven Central (first run only, ~160 MB)...")
    download = LOCAL / "apicurio-download"
    shutil.rmtree(download, ignore_errors=True)
    started = time.monotonic()
    result = subprocess.run(
        ["mvn", "-B", "-q", "-f", str(APICURIO_POM), "dependency:copy", f"-DoutputDirectory={download}"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise InfraError(f"Maven could not resolve Apicurio Registry.\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    say(f"downloaded in {time.monotonic() - started:.1f}s")
    started = time.monotonic()
    shutil.rmtree(APICURIO_HOME, ignore_errors=True)
    (archive,) = download.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(APICURIO_HOME, filter="data")
    # Maven keeps its own copy in ~/.m2; a second one here would only take space.
    shutil.rmtree(download)
    (APICURIO_HOME / ".resolved").touch()
    say(f"unpacked into {APICURIO_HOME} in {time.monotonic() - started:.1f}s")


def _server_jar() -> Path:
    # 3.0 ships a legacy runner jar; later releases the quarkus-app layout.
    jars = [APICURIO_HOME / "quarkus-run.jar", *APICURIO_HOME.glob("*-runner.jar")]
    for jar in jars:
        if jar.exists():
            return jar
    raise InfraError(f"no quarkus-run.jar or *-runner.jar in {APICURIO_HOME}; delete it to reinstall")


def _free_port(preferred: int) -> int:
    # Other environments may run their own registry; take any port rather than fail.
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise InfraError("no free TCP port")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Registry:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def start_registry(port: int = DEFAULT_PORT, timeout: float = 120.0) -> Registry:
    install_apicurio()
    port = _free_port(port)
    log = LOCAL / "apicurio-run" / f"registry-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        "java",
        "-Xmx512m",
        f"-Dquarkus.http.port={port}",
        "-Dquarkus.http.host=127.0.0.1",
        # The management interface would bind the fixed port 9000, so two registries could not coexist.
        "-Dquarkus.management.enabled=false",
        "-jar",
        str(_server_jar()),
    ]
    say(f"starting Apicurio Registry on port {port}...")
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=APICURIO_HOME, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    registry = Registry(f"http://127.0.0.1:{port}{CCOMPAT_PATH}", process, log)
    while not _answers(registry.url):
        if process.poll() is not None:
            raise InfraError(f"the registry exited with {process.returncode}; see {log}")
        if time.monotonic() - started > timeout:
            stop_registry(registry)
            raise InfraError(f"the registry did not answer {registry.url}/subjects in {timeout:.0f}s; see {log}")
        time.sleep(0.2)
    say(f"registry ready on {registry.url} in {time.monotonic() - started:.1f}s (pid {process.pid})")
    return registry


def stop_registry(registry: Registry, grace: float = 20.0) -> None:
    if registry.process.poll() is not None:
        return
    say(f"stopping the registry (pid {registry.process.pid})...")
    registry.process.terminate()
    try:
        registry.process.wait(grace)
    except subprocess.TimeoutExpired:
        registry.process.kill()
        registry.process.wait()


def run(command: list[str], port: int = DEFAULT_PORT) -> int:
    """Run `command` with a fresh registry (its URL in REGISTRY_URL); stop the registry after."""
    # `make` sends SIGTERM when interrupted; turned into SystemExit, it still stops the registry.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    registry = start_registry(port)
    try:
        return subprocess.run(command, env={**os.environ, URL_VARIABLE: registry.url}).returncode
    finally:
        stop_registry(registry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.registry",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["install", "run"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="preferred port (another is taken if busy)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="for run: -- COMMAND...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        if args.action == "install":
            install_apicurio()
            return 0
        if not command:
            parser.error("run needs a command: run -- COMMAND...")
        return run(command, args.port)
    except InfraError as exc:
        print(f"[registry] error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
