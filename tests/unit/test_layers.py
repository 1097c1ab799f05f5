"""The layers hold: the domain imports only the standard library, adapters never import the
steps or the services, and nothing production runs imports the development tooling. An
import-linter contract written as a test, on the source itself (imports inside functions count)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLING = {"devtools", "simulator", "tests"}
# package -> the top-level packages of ours it must never import
FORBIDDEN = {
    "domain": {"streams", "services", "connectors", "console", *TOOLING},
    "connectors": {"streams", "services", "console", *TOOLING},
    "streams": {"services", "console", *TOOLING},
    "services": {"console", *TOOLING},
    "console": TOOLING,
}
OURS = {"domain", "streams", "services", "connectors", "console", *TOOLING}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def violations(root: Path, package: str) -> list[str]:
    """What files of `package` import that its layer may not."""
    problems = []
    for path in sorted((root / package).rglob("*.py")):
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if package == "domain" and top != "domain" and top not in sys.stdlib_module_names:
                problems.append(f"{path.relative_to(root)}:{line} imports {module}, outside the standard library")
            elif top in FORBIDDEN[package]:
                problems.append(f"{path.relative_to(root)}:{line} imports {module}")
    return problems


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_layer_imports_what_it_may_not(package: str) -> None:
    assert violations(ROOT, package) == []


@pytest.mark.parametrize(
    ("package", "line"),
    [
        ("domain", "import aiohttp"),
        ("domain", "from connectors.config import Config"),
        ("connectors", "from streams.topics import TopicSpec"),
        ("connectors", "from services import http"),
        ("streams", "from devtools.localinfra import state_dir"),
        ("services", "from devtools import devctl"),
        ("console", "def f():\n    from simulator.provider import main"),
    ],
)
def test_the_contract_catches_a_wrong_arrow(tmp_path: Path, package: str, line: str) -> None:
    (tmp_path / package).mkdir()
    (tmp_path / package / "bad.py").write_text(line + "\n")
    assert len(violations(tmp_path, package)) == 1


def test_every_production_package_is_checked() -> None:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert packages == OURS, "a new top-level package needs its place in FORBIDDEN or TOOLING"


@pytest.mark.parametrize("module", ["streams.payment_worker", "streams.wallet_worker"])
def test_importing_a_worker_does_nothing(module: str) -> None:
    """No configuration read, no app built: an environment that does not exist is never looked at."""
    probe = f"import {module}, faust; assert not hasattr({module}, 'app')"
    env = {"ENVIRONMENT": "no-such-environment", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
