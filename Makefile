# The README's two commands. Each creates .venv (Python 3.10+; `make PYTHON=python3.11 ...`
# to choose) and installs nbsweep into it; nothing else is needed on the machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,plot,examples,test]'
	touch $(INSTALLED)

demo: $(INSTALLED)
	PATH="$(abspath $(BIN)):$$PATH" sh examples/demo.sh

lint: $(INSTALLED)
	$(BIN)/ruff check src tests benchmarks examples

# pytest exits 5 when it collects nothing: say so rather than fail.
test: lint
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; status=0; fi; exit $$status

clean:
	rm -rf $(VENV) nbsweep-runs .pytest_cache .ruff_cache
