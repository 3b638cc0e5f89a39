# Everything a fresh machine needs: `make run` (the main job: the API server) and `make test`
# (every gate).
# Works as root and as a normal user; installs nothing outside ./.venv.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PLUGINS := $(wildcard plugins/*/pyproject.toml)

.PHONY: install run example test lint typecheck pytest servers bench soak screenshots clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "statekit needs Python >= 3.11; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Core (with its dev/test extras) and every plugin distribution under plugins/, editable.
# The dev extra includes the api extra, so this also stands for $(VENV)/.installed-api.
$(VENV)/.installed: $(BIN)/python pyproject.toml $(PLUGINS)
	$(BIN)/python -m pip install -q -e '.[dev]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	@touch $@ $(VENV)/.installed-api

# What serving needs and nothing more: the core with its api extra, editable (no test
# tools, no plugins), so the main job's first run is quick. Same .venv as `make install`.
$(VENV)/.installed-api: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[api]'
	@touch $@

install: $(VENV)/.installed

# The main job: the REST + WebSocket API on ./statekit.db, http://127.0.0.1:8000 until Ctrl-C.
# More options after ARGS, e.g. `make run ARGS="--port 8080"`.
run: $(VENV)/.installed-api
	$(BIN)/statekit serve --store sqlite:///statekit.db $(ARGS)

# The end-to-end example (no server): put, conflict, concurrent updates, history, snapshots.
# On a throwaway file, never the ./statekit.db that `make run` serves, so every run prints
# what the README shows.
example: install
	@tmp=$$(mktemp -d) && $(BIN)/python examples/quickstart.py "sqlite:///$$tmp/quickstart.db"; \
	  status=$$?; rm -rf "$$tmp"; exit $$status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy --strict statekit $(filter-out %.egg-info,$(wildcard plugins/*/statekit_*))

# The real servers the suite needs (scripts/servers.sh), up for the run, stopped after.
# Under CI=true a server that cannot start fails the run; locally its tests skip
# with a message saying how to start it. The same for the dashboard's headless browser
# (scripts/browser.sh: Debian's chromium + chromium-driver, installed when root).
pytest: install
	scripts/servers.sh start || [ "$${CI:-}" != "true" ]
	scripts/browser.sh || [ "$${CI:-}" != "true" ]
	set -a && . .servers/env && set +a && $(BIN)/python -m pytest; \
	  status=$$?; scripts/servers.sh stop; exit $$status

servers: install
	scripts/servers.sh start

test: lint typecheck pytest

# The long campaigns at full size (the gate runs them at a CI size): the reconcile soak
# with 10,000 intents, 150 outages per server in the fallback-journal campaign, 150
# Hypothesis examples per backend of the reconcile engine's properties, and 1,000 seeded
# runs of the idempotency fault campaign; 5 promotions of the PostgreSQL pair under
# 200 + 200 writes per writer; 5 Redis Cluster failovers and 5 slot moves under writers;
# sharded reconcilers with 8 shards over 4 processes, 2 standbys and 600 intents; 8 bots
# alone and 8 sharing a namespace on each engine (tests/test_many_bots.py); 50 SIGKILLed
# writers of the file backend.
soak: install
	scripts/servers.sh start || [ "$${CI:-}" != "true" ]
	set -a && . .servers/env && set +a && STATEKIT_SOAK=1 $(BIN)/python -m pytest -s \
	  tests/test_reconcile_soak.py tests/test_fallback_campaign.py \
	  tests/test_reconcile_properties.py tests/test_fault_campaign.py \
	  plugins/statekit-postgres/tests/test_standby_promotion.py \
	  plugins/statekit-redis/tests/test_cluster.py plugins/statekit-file/tests/test_crash.py \
	  tests/test_reconcile_shards.py tests/test_many_bots.py; \
	  status=$$?; scripts/servers.sh stop; exit $$status

# Re-take docs/images/dashboard-*.png (docs/dashboard.md) with the dashboard's browser test.
screenshots: install
	scripts/browser.sh
	STATEKIT_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/api/test_dashboard_browser.py

# Every installed backend's benchmark; server backends use the servers.sh servers.
bench: install
	scripts/servers.sh start
	set -a && . .servers/env && set +a && $(BIN)/python -m statekit.bench --backend all

clean:
	-scripts/servers.sh stop
	rm -rf $(VENV) .servers .mypy_cache .ruff_cache .pytest_cache statekit.db statekit.db-*
