# Everything a fresh machine needs: `make run` (the main job) and `make test` (every gate).
# Works as root and as a normal user; installs nothing outside ./.venv.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PLUGINS := $(wildcard plugins/*/pyproject.toml)

.PHONY: install run test lint typecheck pytest bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "statekit needs Python >= 3.11; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Core (with its dev/test extras) and every plugin distribution under plugins/, editable.
$(VENV)/.installed: $(BIN)/python pyproject.toml $(PLUGINS)
	$(BIN)/python -m pip install -q -e '.[dev]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	@touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python examples/quickstart.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy --strict statekit

pytest: install
	$(BIN)/python -m pytest

test: lint typecheck pytest

bench: install
	$(BIN)/python -m statekit.bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache statekit.db statekit.db-*
