# The two commands a user needs: `make demo` and `make test`. Both create .venv and install first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV := $(VENV)/.installed-dev

.PHONY: setup demo test lint bench fuzz soak clean

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

# --force: a second `make demo` replaces the first one's runs in runs/demo.
demo: $(STAMP)
	$(BIN)/scadles compare configs/demo.toml --out runs/demo --force

test: $(DEV)
	$(BIN)/python -m pytest tests

lint: $(DEV)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/all.py

# The fuzz tests with 2,000 examples each (make test runs them with 60).
fuzz: $(DEV)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests -m fuzz

# A 10-minute 2-rank real-mode run on replay streams: accounting and memory checked.
soak: $(STAMP)
	$(BIN)/python scripts/soak.py --minutes 10

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
