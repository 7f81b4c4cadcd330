# The two commands a user needs: `make demo` and `make test`. Both create .venv and install first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV := $(VENV)/.installed-dev

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# The CPU build of torch first, pinned, so no requirement can pull a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

$(DEV): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(DEV)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/scadles compare configs/demo.toml --out runs/demo

test: $(DEV)
	$(BIN)/python -m pytest tests

lint: $(DEV)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
