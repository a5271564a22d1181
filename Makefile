# cashpos — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast bench loadtest loadtest-smoke deps clean schema

$(STAMP): pyproject.toml state/_kernel.c
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@rm -f state/_kernel.*.so  # a failed (optional) build must not leave an old kernel in place
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

deps:
	@scripts/system-deps.sh run

## Start the whole service with an embedded broker, Redis, processor, API, dashboard and simulator.
run: $(STAMP) deps
	$(BIN)/cashpos run

## Run the whole test suite against a real broker, redis-server and Chromium.
test: $(STAMP)
	@scripts/system-deps.sh test
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

## Unit and property tests only (no broker, Redis or browser).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration and not browser"

## Processor throughput on 1M pre-produced events next to a plain aiokafka consume.
bench: $(STAMP) deps
	$(BIN)/python -m bench.processor --events $${EVENTS:-1000000}

loadtest: $(STAMP) deps
	$(BIN)/python -m loadtest.run --compress $${COMPRESS:-48}

loadtest-smoke: $(STAMP) deps
	$(BIN)/python -m loadtest.run --smoke

schema: $(STAMP)
	$(BIN)/cashpos schema > docs/event.schema.json

clean:
	rm -rf var artifacts .pytest_cache
