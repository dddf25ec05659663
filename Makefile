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
	$(BIN)/python -m pip uninstall --quiet --yes pipenb 2>/dev/null || true  # the old name
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

# The wheel (distribution pipenb-fleet) in dist/, with the prebuilt JupyterLab extension inside
# (users need no Node.js): what worker hosts install and the server serves
# (`pipenb server --wheel dist/...whl`). `pip install 'dist/pipenb_fleet-*.whl[server]'` for the
# control plane, `[jupyter]` for notebooks; the wheel alone is an agent.
dist: $(STAMP) build-lab
	rm -f dist/pipenb_fleet-*.whl
	$(BIN)/python -m pip wheel --no-deps --no-build-isolation --quiet --wheel-dir dist .
	@ls dist/pipenb_fleet-*.whl

# JupyterLab with pipenb's server inside (SQLite in .pipenb/) and one local agent; Ctrl-C stops both.
# It serves the wheel from `make dist`, so `%pipe add-agent` prints a line that works.
run: $(STAMP) dist
	bash scripts/run.sh

lint: $(STAMP)
	$(BIN)/ruff check pipenb tests bench examples
	$(BIN)/ruff format --check pipenb tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format pipenb tests bench
	$(BIN)/ruff check --fix pipenb tests bench

# PostgreSQL (Debian's, installed when missing and possible) runs the store tests a second time;
# without it those tests are skipped, the rest run on SQLite. Debian's chromium (installed the
# same way) runs the browser test, and Debian's systemd (the same way) checks the agent's unit.
# The PostgreSQL it started is stopped when the tests end, also on failure or Ctrl-C
# (PIPENB_TEST_PG_KEEP=1 keeps it for the next run; one it found running is left alone).
test: $(STAMP) lint build-lab check-lab
	@bash scripts/chromium-test.sh
	@bash scripts/systemd-test.sh
	@bash scripts/peers-test.sh
	@bash scripts/nginx-test.sh
	@PIPENB_TEST_PG_STARTED=; eval "$$(bash scripts/postgres-test.sh)"; \
	export PIPENB_TEST_POSTGRES_URL; \
	if [ -n "$$PIPENB_TEST_PG_STARTED" ] && [ -z "$$PIPENB_TEST_PG_KEEP" ]; then \
		trap 'bash scripts/postgres-test.sh stop' EXIT; trap 'exit 130' INT TERM; \
	fi; \
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'  # the peers: bytewax, polars
	$(BIN)/python bench/engine_bench.py
	$(BIN)/python bench/http_bench.py
	$(BIN)/python bench/checkin_load.py
	$(BIN)/python bench/agent_memory.py
	$(BIN)/python bench/cluster_bench.py

# long reliability runs (10 min each): check-in soak, 5,000-agent burst, full-speed pipe
soak: $(STAMP)
	$(BIN)/python bench/soak/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache node_modules lib tsconfig.tsbuildinfo pipenb/labextension
