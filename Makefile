# The same commands on a laptop and in CI. `make test` sets up everything it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench soak venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# JupyterLab with pipenb's server inside (SQLite in .pipenb/) and one local agent; Ctrl-C stops both
run: $(STAMP)
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
test: $(STAMP) lint
	@bash scripts/chromium-test.sh
	@eval "$$(bash scripts/postgres-test.sh)"; export PIPENB_TEST_POSTGRES_URL; \
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/engine_bench.py
	$(BIN)/python bench/checkin_load.py
	$(BIN)/python bench/agent_memory.py
	$(BIN)/python bench/cluster_bench.py

# long reliability runs (10 min each): check-in soak, 5,000-agent burst, full-speed pipe
soak: $(STAMP)
	$(BIN)/python bench/soak/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
