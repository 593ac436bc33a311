# chatdesk — the commands a developer needs. `make run` and `make test` are the two that matter.

# The interpreter of the venv: the distribution's CPython 3.11 where it has venv (Debian builds
# it with PGO and LTO, as the python:3.11 images are), else python3 on PATH. pyenv's default
# build has neither: every service spent about a quarter more CPU per message on it.
DISTRO_PYTHON := /usr/bin/python3.11
PYTHON ?= $(shell $(DISTRO_PYTHON) -c 'import ensurepip' 2>/dev/null && echo $(DISTRO_PYTHON) || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Tests and benchmarks use these servers (each run gets its own database and vhost on them).
# Unset them both to let testcontainers start the servers in Docker instead.
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
TEST_AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/

.PHONY: run test lint typecheck bench bench-duplicates bench-routing events migration console-vendor \
	screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

## Run the whole product: embedded by default; one process per service when AMQP_URL is set.
run: $(STAMP)
	$(BIN)/python -m services

## Lint, type-check, then every test on real PostgreSQL and RabbitMQ.
test: lint typecheck
	DATABASE_URL=$(TEST_DATABASE_URL) AMQP_URL=$(TEST_AMQP_URL) $(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m libs.common.catalogue docs/events --check

typecheck: $(STAMP)
	$(BIN)/mypy libs services

## Benchmarks (not tests): writes docs/benchmarks.md.
bench: $(STAMP)
	DATABASE_URL=$(TEST_DATABASE_URL) AMQP_URL=$(TEST_AMQP_URL) $(BIN)/python -m bench.e2e

## The duplicate search among 100k and 1M contacts (PostgreSQL only): writes docs/benchmarks.md.
bench-duplicates: $(STAMP)
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python -m bench.duplicates

## Routing's offers per second with 200 agents and 10,000 waiting chats, and an agent's time to
## a first offer (PostgreSQL only): writes docs/benchmarks.md.
bench-routing: $(STAMP)
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python -m bench.routing

## The event catalogue: JSON Schemas for subscribers, in docs/events/.
events: $(STAMP)
	$(BIN)/python -m libs.common.catalogue docs/events

## A new migration for one service: make migration SERVICE=chat MSG="add x"
migration: $(STAMP)
	$(BIN)/python -m libs.common.revision $(SERVICE) -m "$(MSG)"

## The console's screenshots in docs/screenshots (README), taken by its browser tests.
screenshots: $(STAMP)
	CHATDESK_SCREENSHOTS=docs/screenshots DATABASE_URL=$(TEST_DATABASE_URL) AMQP_URL=$(TEST_AMQP_URL) \
	  $(BIN)/pytest tests/console -q -k embedded

## Refresh the console's vendored ES modules from the npm registry (the one target that downloads;
## the files are committed, so `make run` and `make test` never do). Versions: vendor/package-lock.json.
CONSOLE_VENDOR := services/gateway/console/vendor
console-vendor:
	rm -rf .console-vendor && mkdir .console-vendor
	cp $(CONSOLE_VENDOR)/package.json $(CONSOLE_VENDOR)/package-lock.json .console-vendor/
	cd .console-vendor && npm ci --ignore-scripts --no-audit --no-fund
	# Bare imports become relative ones, so the browser needs no import map; source maps go.
	m=.console-vendor/node_modules; for pair in \
	  preact/dist/preact.mjs:preact.js preact/hooks/dist/hooks.mjs:hooks.js \
	  htm/dist/htm.mjs:htm.js htm/preact/index.mjs:htm-preact.js; do \
	  sed -e 's#from"preact"#from"./preact.js"#g' -e 's#from"htm"#from"./htm.js"#g' \
	    -e '/sourceMappingURL/d' "$$m/$${pair%%:*}" > $(CONSOLE_VENDOR)/$${pair##*:}; \
	done
	cp .console-vendor/node_modules/preact/LICENSE $(CONSOLE_VENDOR)/LICENSE-preact
	cp .console-vendor/node_modules/htm/LICENSE $(CONSOLE_VENDOR)/LICENSE-htm
	rm -rf .console-vendor

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
