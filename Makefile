# Two commands: `make run` brings the whole system up, `make test` runs every test.
PYTHON ?= python3
# The environment the tests and the fault suite run in (config/<name>.json); another name
# lets a second checkout run its suite beside this one on other ports.
TEST_ENV ?= test
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run stop status logs test test-unit test-integration test-alerts lint install reset kafka-log kafka-tool help token

help:
	@echo "make run        install, start Kafka + PostgreSQL + every service, load sample wallets"
	@echo "make stop       stop everything make run started"
	@echo "make test       run all tests against a separate real Kafka + PostgreSQL (started if needed)"
	@echo "make test-unit  only the pure unit tests (no servers)"
	@echo "make test-alerts  promtool: check and unit-test the alert rules, check the scrape config"
	@echo "make lint       ruff + mypy"
	@echo "make status     what runs where;  make logs [NAME=wallet-api]"
	@echo "make token      a bearer token: make token SUBJECT=dev-operator ROLES=operator"
	@echo "make reset      stop and delete local Kafka data and the PostgreSQL cluster"

$(STAMP): pyproject.toml
	@echo "[install] creating $(VENV) and installing Python dependencies..."
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)
	@echo "[install] done"

install: $(STAMP)

# The benchmark's plotting and profiling packages are an extra: only `make bench` installs them.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	@$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

run: $(STAMP)
	@$(PY) -m devtools.devctl up

stop: $(STAMP)
	@$(PY) -m devtools.devctl down

status: $(STAMP)
	@$(PY) -m devtools.devctl status

logs: $(STAMP)
	@$(PY) -m devtools.devctl logs $(NAME)

# make token SUBJECT=dev-operator ROLES=operator
token: $(STAMP)
	@$(PY) -m connectors.auth token $(or $(SUBJECT),dev-admin) $(or $(ROLES),admin)

kafka-log: $(STAMP)
	@$(PY) -m devtools.localinfra kafka-log

reset: $(STAMP)
	@$(PY) -m devtools.devctl down
	@$(PY) -m devtools.localinfra reset

test: $(STAMP)
	@$(PY) -m devtools.promtool test
	@$(PY) -m devtools.chromium install
	@ENVIRONMENT=$(TEST_ENV) $(PY) -m devtools.localinfra up
	@ENVIRONMENT=$(TEST_ENV) $(PY) -m devtools.devctl setup
	@ENVIRONMENT=$(TEST_ENV) $(PY) -m pytest tests/unit tests/integration $(PYTEST_ARGS)
	@ENVIRONMENT=$(TEST_ENV) $(PY) -m pytest tests/chaos $(PYTEST_ARGS)

test-unit: $(STAMP)
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The alert rules' own unit tests (ops/prometheus/tests); installs promtool if missing (Debian, as root).
test-alerts: $(STAMP)
	@$(PY) -m devtools.promtool test

test-stop: $(STAMP)
	@ENVIRONMENT=$(TEST_ENV) $(PY) -m devtools.devctl down

lint: $(STAMP)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy domain streams services connectors console devtools simulator

kafka-tool: $(STAMP)
	@bin/kafka-tool $(ARGS)

# Apart from `make test`: the first run downloads Apicurio Registry (~160 MB). The
# Kafka round trip in it uses the test broker if one runs (ENVIRONMENT=test unless set).
.PHONY: test-registry
test-registry: $(STAMP)
	@ENVIRONMENT=$${ENVIRONMENT:-test} $(PY) -m devtools.registry run -- $(PY) -m pytest tests/registry $(PYTEST_ARGS)

.PHONY: trace
trace: ; $(PY) -m console trace $(ID)

# The fault suite: every scenario (SIGKILLs, broker and database outages, a rebalance kill,
# misbehaving webhooks, poison for the projector) against the test environment, then the kill loop
# (20 SIGKILLs of each worker under load); one line each, fails on any violation.
.PHONY: chaos
chaos: $(STAMP)
	@ENVIRONMENT=$(TEST_ENV) $(PY) -m devtools.localinfra up
	@ENVIRONMENT=$(TEST_ENV) $(PY) -m devtools.devctl setup
	@ENVIRONMENT=$(TEST_ENV) $(PY) -m tests.chaos
	@ENVIRONMENT=$(TEST_ENV) $(PY) -m tests.chaos.kill_loop wallet-worker payment-worker --kills 20 --every 5

# Load benchmark in its own environment (ENVIRONMENT=bench, config/bench.json), started if needed:
# `make bench` (50 payments/s for 20 s) or `make bench ARGS="--mode max"`. See docs/benchmark.md.
.PHONY: bench
bench: $(BENCH_STAMP)
	@$(PY) -m devtools.bench $(ARGS)
