# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install lock clean bench

# tools/install.py: the locked resolution (tools/install-lock.json) installed by two pip processes at once;
# it falls back to a plain `pip install -e '.[dev]'` wherever that does not apply
$(STAMP): pyproject.toml tools/install-lock.json
	@# a venv whose creation was interrupted (no pip in it) is made again
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python tools/install.py $(BIN)/python '.[dev]'
	touch $(STAMP)

# after changing dependencies in pyproject.toml: resolve again and commit the new lock
lock: $(STAMP)
	$(BIN)/python tools/install.py $(BIN)/python '.[dev]' --write-lock
	@echo "tools/install-imports.txt (what the install byte-compiles) was recorded with the old lock: until it is"
	@echo "recorded again (see tools/record_imports.py), installs byte-compile every module, as pip does"

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/factory demo --out dist --track

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs dist .pytest_cache
