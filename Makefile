# The two commands of the README: `make demo` and `make test`. Both set everything up themselves:
# a virtualenv in .venv with the package and its dev tools, and Debian's redis-server when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup redis lint typecheck test test-fast demo bench clean

setup: $(STAMP) redis

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mpush needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

redis:
	@scripts/ensure-redis

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: setup lint typecheck
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m 'not slow'

demo: setup
	$(BIN)/mpush demo

bench: setup
	$(BIN)/python bench/mpush.py
	$(BIN)/python bench/vpush.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .tmp .demo
