# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3.11
# pip here prints one warning per missing local index folder; keep real errors visible
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]' 2>&1 | { $(QUIET_PIP); }
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/factory demo --out dist --track

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs dist .pytest_cache
