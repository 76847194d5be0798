# The two commands of the README: `make demo` and `make test`. Both set everything up themselves:
# a virtualenv in .venv with the package and its dev tools, and Debian's redis-server when missing
# (`make test` also installs chromium and chromedriver for the browser test, `make bench` wrk and
# nginx: scripts/ensure-deps).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup redis browser lint typecheck test test-fast demo bench bench-http bench-static clean

setup: $(STAMP) redis

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mpush needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

redis:
	@scripts/ensure-deps redis

browser:
	@scripts/ensure-deps browser

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

test: setup browser lint typecheck
	$(BIN)/pytest

test-fast: setup browser
	$(BIN)/pytest -m 'not slow'

demo: setup
	$(BIN)/mpush demo

bench: setup
	@scripts/ensure-deps bench
	@$(BIN)/pip install --quiet -e '.[bench]'
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

bench-http: setup
	@scripts/ensure-deps bench
	@$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/http.py

bench-static: setup
	@scripts/ensure-deps bench
	@$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/static.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .tmp .demo
