"""The alerting as code in ops/: promtool judges the rules (syntax, their unit tests) and the
scrape configuration; every metric the rules and the dashboard read is one some process exports;
every alert's runbook link lands on a section of docs/runbook.md."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devtools.promtool import PROMETHEUS_DIR, checks

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
DASHBOARD = ROOT / "ops" / "grafana" / "payments.json"
RUNBOOK = ROOT / "docs" / "runbook.md"
# Where the processes define their metrics (prometheus_client Counter, Gauge, Histogram, Summary).
METRIC_SOURCES = ["connectors/*.py", "services/*.py", "streams/*.py", "simulator/*.py"]
# Series no module of ours defines: Prometheus' own per target, and prometheus_client's default
# process collector (every process of ours exposes its default registry).
NOT_OURS = {"up", "process_start_time_seconds", "process_resident_memory_bytes", "process_cpu_seconds_total"}
SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing in CI: make test installs it (python -m devtools.promtool install)")
        pytest.skip("promtool is not installed: make test-alerts installs it")
    return found


@pytest.mark.parametrize("check", range(3), ids=["check rules", "test rules", "check config"])
def test_promtool_accepts_the_rules_their_tests_and_the_scrape_config(check: int) -> None:
    command = checks(promtool())[check]
    result = subprocess.run(command, cwd=PROMETHEUS_DIR, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def exported_metrics() -> set[str]:
    """Every series name the metric constructors in our sources produce, from their source text."""
    names = set()
    for pattern in METRIC_SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args):
                    continue
                kind, first = node.func.id, node.args[0]
                if kind in SUFFIXES and isinstance(first, ast.Constant) and isinstance(first.value, str):
                    base = first.value.removesuffix("_total") if kind == "Counter" else first.value
                    names.update(base + suffix for suffix in SUFFIXES[kind])
    return names


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads: what is left of its identifiers once strings,
    label matchers, grouping clauses, ranges, functions and keywords are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\boffset\s+\w+", " ", expr)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        is_call = expr[match.end() :].lstrip().startswith("(")
        if not is_call and match.group() not in PROMQL_WORDS and not match.group()[0].isdigit():
            names.add(match.group())
    return names


def alert_rules() -> Iterator[dict]:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            yield from group["rules"]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every panel's query, given to it as a recording rule."""
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    rules = [{"record": f"dashboard:query_{n}", "expr": expr} for n, expr in enumerate(exprs)]
    path = tmp_path / "dashboard.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_metric_names_are_found_in_promql() -> None:
    expr = 'sum by (le) (rate(a_bucket{x="y", z=~"5.."}[5m])) / b_total unless c offset 10m > 0.01 and on(job) up'
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "up"}


def test_every_metric_the_rules_and_the_dashboard_read_is_exported() -> None:
    exported = exported_metrics() | NOT_OURS
    some = {"http_requests_total", "http_requests_shed_total", "payment_saga_duration_seconds_bucket"}
    assert some | {"money_invariant_violations_total", "consumer_lag_messages"} <= exported
    read = {name: "rule " + rule["alert"] for rule in alert_rules() for name in metric_names(rule["expr"])}
    read |= {name: "dashboard" for expr in dashboard_exprs() for name in metric_names(expr)}
    assert len(read) > 10
    unknown = {name: where for name, where in read.items() if name not in exported}
    assert not unknown, f"read but exported by no process: {unknown}"


def test_every_alert_has_a_severity_and_a_runbook_section() -> None:
    headings = {line[3:].strip().lower() for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")}
    rules = list(alert_rules())
    assert len(rules) >= 10
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "docs/runbook.md" and anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in headings, f"docs/runbook.md has no section '## {rule['alert']}'"


def test_every_alert_has_a_promtool_test_that_fires_it_and_one_that_keeps_it_quiet() -> None:
    fired, quiet = set(), set()
    for path in (PROMETHEUS_DIR / "tests").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names <= fired, f"never shown firing: {names - fired}"
    assert names <= quiet, f"never shown quiet: {names - quiet}"
