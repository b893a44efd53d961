# Stue: one obvious command for each habit. See README.md.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp

.PHONY: run test test-fast check bench system-deps clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## Run the service on http://127.0.0.1:8000 (embedded Redis unless STUE_REDIS_URL is set).
run: $(STAMP) $(NODE_STAMP)
	$(VENV)/bin/stue serve --demo

## Install what the tests need (Debian's chromium, redis-server) and run the whole suite.
test: $(STAMP) $(NODE_STAMP) system-deps
	@# The tests start hundreds of `stue` processes: compiled once here, each starts ~0.25 s sooner (even where
	@# PYTHONDONTWRITEBYTECODE keeps imports from writing the cache themselves).
	$(PY) -m compileall -q server
	$(PY) -m pytest -q

## The pure and in-process tests only (no browser).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not browser and not slow"

system-deps:
	@scripts/ensure-system-deps chromium firefox-esr redis-server

## Linters and type checkers.
check: $(STAMP) $(NODE_STAMP)
	$(VENV)/bin/ruff check server tests bench
	$(VENV)/bin/ruff format --check server tests bench
	$(VENV)/bin/mypy
	npx --no-install tsc -p web/jsconfig.json

## Benchmarks: print a table and write bench/results/*.json.
bench: $(STAMP) $(NODE_STAMP) system-deps
	$(PY) -m bench

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache test-artifacts bench/results
