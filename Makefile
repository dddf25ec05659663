# The same commands on a laptop and in CI. `make test` sets up everything it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench soak venv clean build-lab check-lab dist

# The JupyterLab extension (TypeScript in src/, built into pipenb/labextension). Node.js and jlpm
# are build-time tools: scripts/node-setup.sh installs Debian's nodejs when node is missing.
# Incremental: nothing runs when no source changed.
LAB_SOURCES := package.json tsconfig.json $(wildcard src/*.ts style/*.css style/*.js schema/*.json)
LAB_BUILT := pipenb/labextension/static/style.js
NODE_STAMP := node_modules/.pipenb-installed
JLPM := PATH="$(abspath $(BIN)):$$PATH" $(abspath $(BIN))/jlpm

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

$(NODE_STAMP): package.json yarn.lock $(STAMP)
	@bash scripts/node-setup.sh
	$(JLPM) install
	touch $(NODE_STAMP)

$(LAB_BUILT): $(NODE_STAMP) $(LAB_SOURCES)
	$(JLPM) build
	touch $(LAB_BUILT)

build-lab: $(LAB_BUILT)

# type checks, lint and the unit tests of the frontend's pure logic
check-lab: $(NODE_STAMP)
	node_modules/.bin/tsc --noEmit
	node_modules/.bin/eslint src
	node_modules/.bin/vitest run

# the wheel, with the prebuilt JupyterLab extension inside (users need no Node.js)
dist: $(STAMP) build-lab
	$(BIN)/python -m pip wheel --no-deps --no-build-isolation -w dist .

# JupyterLab with pipenb's server inside (SQLite in .pipenb/) and one local agent; Ctrl-C stops both
run: $(STAMP) build-lab
	bash scripts/run.sh

lint: $(STAMP)
	$(BIN)/ruff check pipenb tests bench examples
	$(BIN)/ruff format --check pipenb tests bench

format: $(STAMP)
	$(BIN)/ruff format pipenb tests bench
	$(BIN)/ruff check --fix pipenb tests bench

# PostgreSQL (Debian's, installed when missing and possible) runs the store tests a second time;
# without it those tests are skipped, the rest run on SQLite. Debian's chromium (installed the
# same way) runs the browser test.
test: $(STAMP) lint build-lab check-lab
	@bash scripts/chromium-test.sh
	@eval "$$(bash scripts/postgres-test.sh)"; export PIPENB_TEST_POSTGRES_URL; \
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/engine_bench.py
	$(BIN)/python bench/checkin_load.py
	$(BIN)/python bench/agent_memory.py

# long reliability runs (10 min each): check-in soak, 5,000-agent burst, full-speed pipe
soak: $(STAMP)
	$(BIN)/python bench/soak/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache node_modules lib tsconfig.tsbuildinfo pipenb/labextension
