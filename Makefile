# README's two commands: `make demo` and `make test`. Each sets itself up on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test reliability lint install clean

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test,examples]'
	@touch $(INSTALLED)

install: $(INSTALLED)

demo: $(INSTALLED)
	AIRFLOW_HOME=$(CURDIR)/.airflow AIRFLOW__CORE__LOAD_EXAMPLES=False $(BIN)/python scripts/demo.py

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

# The reliability suite alone (it is part of `make test` as well).
reliability: $(INSTALLED)
	$(BIN)/python -m pytest tests/reliability tests/integration

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .airflow
