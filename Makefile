# The two commands of the README: `make demo` runs the shop, `make test` runs every test.
# Both set up what they need on a fresh machine (a virtualenv in .venv with the package).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

AXE := tests/browser/node_modules/axe-core/axe.min.js

.PHONY: demo test lint install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# axe-core for the browser tests' accessibility checks, pinned in tests/browser/package-lock.json.
$(AXE): tests/browser/package.json tests/browser/package-lock.json
	npm ci --prefix tests/browser --no-audit --no-fund --silent
	touch $@

demo: $(BIN)/.installed
	$(BIN)/cryptocheckout demo

test: $(BIN)/.installed $(AXE)
	scripts/install-browser
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache tests/browser/node_modules
