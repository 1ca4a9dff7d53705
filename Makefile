# Two commands matter: `make up` (start Tower on this machine) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint unit install system-deps bench clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv

# Bytecode is compiled ahead: every `tower` process (and the suite starts hundreds)
# would otherwise compile what it imports again wherever PYTHONDONTWRITEBYTECODE is set.
$(STAMP): pyproject.toml $(BIN)/uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)
	$(BIN)/python -m compileall -q src

up: install
	$(BIN)/tower up

# PostgreSQL (for the storage tests on both databases) comes from Debian when it is missing.
system-deps:
	@bash scripts/system-deps.sh

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	cd src && ../$(BIN)/lint-imports --config ../pyproject.toml

test: install system-deps lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup

unit: install
	$(BIN)/python -m pytest tests/unit

bench: install
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/request_cost.py
	$(BIN)/python bench/listing.py
	$(BIN)/python bench/ratelimit.py
	$(BIN)/python bench/schedules.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
