# Two commands on a fresh machine: `make run` and `make test`.
# Both create .venv when it is missing and (re)install when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test lint typecheck test-sqlite test-postgresql bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "tuition-escrow needs Python >= 3.11; set PYTHON=..." or 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps record which install the venv holds; pyproject.toml changes trigger a reinstall.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/escrow serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check ledger api settlement tests
	$(BIN)/ruff format --check ledger api settlement tests

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

test-sqlite: $(VENV)/.installed-dev
	$(BIN)/python tests/run_suite.py sqlite

test-postgresql: $(VENV)/.installed-dev
	$(BIN)/python tests/run_suite.py postgresql

test: lint typecheck test-sqlite test-postgresql

# Issue 8's benchmark at the default scale (1,000,000 lessons): a scratch SQLite file, then a
# temporary durable PostgreSQL cluster (fsync on, as production). Figures land in var/bench/.
BENCH_SCALE ?= 1000000
bench: $(VENV)/.installed-dev
	mkdir -p var/bench
	$(BIN)/escrow bench --scale $(BENCH_SCALE) --json-out var/bench/sqlite.json
	ESCROW_PG_DURABLE=1 $(BIN)/python tests/pgcluster.py -- sh -c '$(BIN)/escrow bench --scale $(BENCH_SCALE) --database-url "$$ESCROW_TEST_POSTGRES_URL" --json-out var/bench/postgresql.json'

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
