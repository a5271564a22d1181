# cashpos — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# One stamp per install: the service alone (`make run`: service and simulator), with the `load`
# extra (`make bench`, `make loadtest`), with the `test` extra (includes `load`).
STAMP := $(VENV)/.installed
STAMP_LOAD := $(VENV)/.installed-load
STAMP_TEST := $(VENV)/.installed-test

.PHONY: run test test-fast lint bench loadtest loadtest-smoke deps clean schema

$(STAMP): REQ := .
$(STAMP_LOAD): REQ := .[load]
$(STAMP_TEST): REQ := .[test]
$(STAMP) $(STAMP_LOAD) $(STAMP_TEST): pyproject.toml state/_kernel.c
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@rm -f state/_kernel.*.so  # a failed (optional) build must not leave an old kernel in place
	$(BIN)/pip install -q -e '$(REQ)'
	@touch $@

deps:
	@scripts/system-deps.sh run

## Start the whole service with an embedded broker, Redis, processor, API, dashboard and simulator.
run: $(STAMP) deps
	$(BIN)/cashpos run

## Lint first (below), then the whole test suite against a real broker, redis-server and Chromium.
test: $(STAMP_TEST) lint
	@scripts/system-deps.sh test
	$(BIN)/python -m pytest -q -ra --durations=25 $(PYTEST_ARGS)

## Unit and property tests only (no broker, Redis or browser).
test-fast: $(STAMP_TEST)
	$(BIN)/python -m pytest -q -m "not integration and not browser"

## ruff check, ruff format --check and mypy over the whole tree (the versions the `test` extra pins);
## the first that fails stops it, with one line saying what to do.
lint: $(STAMP_TEST)
	@$(BIN)/ruff check . || { echo "make lint: ruff check found the problems above (fix, or $(BIN)/ruff check --fix <file>)"; exit 1; }
	@$(BIN)/ruff format --check . || { echo "make lint: the files above are not formatted: $(BIN)/ruff format <file>"; exit 1; }
	@$(BIN)/mypy || { echo "make lint: mypy found the type errors above"; exit 1; }

## Processor throughput on 1M pre-produced events next to a plain aiokafka consume.
bench: $(STAMP_LOAD) deps
	$(BIN)/python -m bench.processor --events $${EVENTS:-1000000}

loadtest: $(STAMP_LOAD) deps
	$(BIN)/python -m loadtest.run --compress $${COMPRESS:-48}

loadtest-smoke: $(STAMP_LOAD) deps
	$(BIN)/python -m loadtest.run --smoke

schema: $(STAMP)
	$(BIN)/cashpos schema > docs/event.schema.json

clean:
	rm -rf var artifacts .pytest_cache
