# The README's two commands. Each creates .venv (Python 3.10+; `make PYTHON=python3.11 ...`
# to choose) and installs nbsweep into it; nothing else is needed on the machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo bench test test-fast lint clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,plot,examples,test]'
	touch $(INSTALLED)

demo: $(INSTALLED)
	PATH="$(abspath $(BIN)):$$PATH" sh examples/demo.sh

# Per-trial overhead of each way to run a notebook (benchmarks/README.md); about 8 minutes.
# make bench BENCH_ARGS=--quick for a 30 s smoke run. Rows whose tool (papermill, torch) is not
# in .venv are skipped with the reason: pip install -e '.[bench]' into it for those.
bench: $(INSTALLED)
	$(BIN)/python benchmarks/overhead.py $(BENCH_ARGS)

# ruff's rules and format, and mypy over src/ (settings in pyproject.toml): all clean.
lint: $(INSTALLED)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

# pytest exits 5 when it collects nothing: say so rather than fail. Two workers (pytest-xdist):
# most of a test's time is kernels starting and processes waiting, so two share 2 cores well.
test: lint
	$(BIN)/python -m pytest -n 2; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; status=0; fi; exit $$status

# Unit tests only (in-process, no kernel, no server), on two workers.
# `make test` runs them all.
test-fast: lint
	$(BIN)/python -m pytest -n 2 -m "not kernel and not e2e and not slow" -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; status=0; fi; exit $$status

clean:
	rm -rf $(VENV) nbsweep-runs .pytest_cache .ruff_cache
