# keepdesk — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help run test test-fast e2e lint fmt migration vendor vendor-check bench bench-big clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "keepdesk needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

run: $(STAMP) ## create the venv, migrate, serve on http://127.0.0.1:8000 (SQLite in ./keepdesk-data)
	$(BIN)/keepdesk upgrade
	$(BIN)/keepdesk serve

test: $(STAMP) ## run the whole suite (SQLite and PostgreSQL)
	$(BIN)/python -m pytest

test-fast: $(STAMP) ## the suite on SQLite only
	KEEPDESK_TEST_DATABASES=sqlite $(BIN)/python -m pytest -q

e2e: $(STAMP) ## only the browser tests (Playwright driving Debian's chromium)
	KEEPDESK_TEST_DATABASES=sqlite $(BIN)/python -m pytest -q tests/e2e

lint: $(STAMP) ## ruff, format check, mypy, import layers
	$(BIN)/ruff check src tests migrations bench
	$(BIN)/ruff format --check src tests migrations bench
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP) ## format the code and apply safe ruff fixes
	$(BIN)/ruff format src tests migrations
	$(BIN)/ruff check --fix src tests migrations

migration: $(STAMP) ## new Alembic revision from the models: make migration m="what changed"
	@test -n "$(m)" || { echo 'usage: make migration m="what changed"'; exit 1; }
	$(BIN)/python -m keepdesk.ops.new_migration "$(m)"

vendor: ## fetch pinned front-end files (npm pack), check sha256, copy to web/static/vendor
	scripts/vendor-assets.sh

vendor-check: ## fail if web/static/vendor differs from scripts/vendor-assets.lock
	scripts/vendor-assets.sh --check

bench: $(STAMP) ## benchmark at 100,000 tickets on SQLite and PostgreSQL (docs/benchmarks.md)
	$(BIN)/python -m bench --tickets 100000 --update-docs $(BENCH_ARGS)

bench-big: $(STAMP) ## the same at 1,000,000 tickets (builds a multi-GB data set once)
	$(BIN)/python -m bench --tickets 1000000 --update-docs $(BENCH_ARGS)

clean: ## remove the venv and caches (keeps ./keepdesk-data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
