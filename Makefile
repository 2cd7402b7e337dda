# Everything runs from a project-local virtualenv that the first target creates.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint format bench image-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m tollway.demo

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src

format: $(STAMP)
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

# The load generator is Debian's wrk; installed here when missing (needs root or sudo).
bench: $(STAMP)
	@command -v wrk >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python -m tollway.bench --rounds 5 --out bench-results.json

# What the Dockerfile installs (`pip install .`, no extras), checked in a throwaway venv: no Docker
# engine is needed. The image's entrypoint must start and refuse to run without a pepper.
image-check:
	rm -rf .tollway/image-venv && $(PYTHON) -m venv .tollway/image-venv
	.tollway/image-venv/bin/python -m pip install --quiet --upgrade pip
	.tollway/image-venv/bin/python -m pip install --quiet .
	.tollway/image-venv/bin/tollway --version
	.tollway/image-venv/bin/python -c 'import tollway.server, tollway.extproc.grpc_server, tollway.extproc.http_server, weasyprint, stripe'
	.tollway/image-venv/bin/tollway plans validate plans/catalog.yaml plans/configmap.yaml deploy/plans.yaml
	.tollway/image-venv/bin/tollway db migrate --dsn chdb://.tollway/image-chdb
	.tollway/image-venv/bin/tollway db migrate --dsn chdb://.tollway/image-chdb | grep -q 'up to date'
	! env -u TOLLWAY_PEPPER .tollway/image-venv/bin/tollway serve 2>.tollway/image-check.err
	grep -q TOLLWAY_PEPPER .tollway/image-check.err
	rm -rf .tollway/image-venv .tollway/image-check.err .tollway/image-chdb

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .tollway bench-results.json
