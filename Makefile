# README's two commands: `make demo` and `make test`. Each sets itself up on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test reliability lint install clean redis-server chromium postgresql

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test,examples,redis,common-ai,openlineage]'
	@touch $(INSTALLED)

# The shared-quota tests run a real redis-server (Debian's package); installed here when missing.
REDIS_SERVER := $(shell command -v redis-server 2>/dev/null)
redis-server:
ifeq ($(REDIS_SERVER),)
	@echo "redis-server is missing: installing Debian's redis-server for the shared-quota tests"
	@apt-get install -y -qq redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
endif

# The spend page's browser test drives Debian's chromium through Playwright; installed here when missing.
CHROMIUM := $(shell command -v chromium 2>/dev/null)
chromium:
ifeq ($(CHROMIUM),)
	@echo "chromium is missing: installing Debian's chromium for the spend page's browser test"
	@apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
endif

# The CeleryExecutor deployment test runs its metadata database on Debian's postgresql; installed here when missing.
POSTGRES := $(wildcard /usr/lib/postgresql/*/bin/initdb)
postgresql:
ifeq ($(POSTGRES),)
	@echo "postgresql is missing: installing Debian's postgresql for the CeleryExecutor deployment test"
	@apt-get install -y -qq postgresql >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }
endif

install: $(INSTALLED)

demo: $(INSTALLED)
	AIRFLOW_HOME=$(CURDIR)/.airflow AIRFLOW__CORE__LOAD_EXAMPLES=False $(BIN)/python scripts/demo.py

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two test groups side by side: the 2,000-row load test spends ~7 minutes waiting on the emulator's rate
# limit and the CeleryExecutor deployment ~4 minutes waiting on its quota and a lost worker's heartbeat
# (little CPU), so they run beside the rest instead of after it. Their output follows the main group's;
# the target fails if either group fails.
SIDE_TESTS := tests/reliability/test_load.py tests/integration/test_celery_deployment.py
test: lint redis-server chromium postgresql
	@rm -f .pytest-load.log .pytest-main.log
	@$(BIN)/python -m pytest -p no:cacheprovider $(SIDE_TESTS) > .pytest-load.log 2>&1 & load=$$!; \
	$(BIN)/python -m pytest $(addprefix --ignore=,$(SIDE_TESTS)) 2>&1 | tee .pytest-main.log; main=$${PIPESTATUS[0]}; \
	wait $$load; loaded=$$?; \
	echo "---- side group ($(SIDE_TESTS)) ----"; cat .pytest-load.log; \
	echo "---- both groups ----"; $(BIN)/python scripts/test_summary.py .pytest-main.log .pytest-load.log; \
	test $$main -eq 0 -a $$loaded -eq 0

# The reliability suite alone (it is part of `make test` as well).
reliability: $(INSTALLED) redis-server
	$(BIN)/python -m pytest tests/reliability tests/integration

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .airflow
