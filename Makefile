# README's two commands: `make demo` and `make test`. Each sets itself up on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test reliability lint install clean redis-server chromium postgresql dist matrix matrix-latest lock lock-upgrade

# The development environment is locks/dev.txt, exactly: uv (at its locked version) syncs the venv to the
# lock, then the provider goes in editable with --no-deps. Nothing is resolved here (docs/compatibility.md).
LOCK := locks/dev.txt
UV_PIN := $(shell grep -m1 -E '^uv==' $(LOCK))
$(INSTALLED): $(LOCK) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet $(UV_PIN)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python $(LOCK)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	@touch $(INSTALLED)

# Write every lock of locks/environments.toml again, keeping each pin that still fits (a new hold or
# dependency moves only what it must); lock-upgrade takes the newest of everything within the holds.
lock: $(INSTALLED)
	$(BIN)/python scripts/locks.py
lock-upgrade: $(INSTALLED)
	$(BIN)/python scripts/locks.py --upgrade

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

# The release a team pins: an sdist and a wheel, checked by twine. The compatibility matrix installs the wheel.
dist: $(INSTALLED)
	@rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist . > .build.log 2>&1 || { cat .build.log; exit 1; }
	$(BIN)/twine check --strict dist/*

# The smoke suite (tests/compat) in one environment per supported Airflow minor and one with the oldest
# google-genai and tenacity (scripts/compat_matrix.py), each installed from its lock in locks/ (kept in .matrix/).
matrix: dist
	$(BIN)/python scripts/compat_matrix.py dist/*.whl

# Not part of `make test`: each leg resolved afresh (its holds kept) and the smoke suite run, to learn
# what the newest upstream releases break before a lock refresh brings them in. Reports per leg.
matrix-latest: dist
	$(BIN)/python scripts/compat_matrix.py --latest dist/*.whl

demo: $(INSTALLED)
	AIRFLOW_HOME=$(CURDIR)/.airflow AIRFLOW__CORE__LOAD_EXAMPLES=False $(BIN)/python scripts/demo.py

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Test groups side by side: the 2,000-row load test spends ~7 minutes waiting on the emulator's rate
# limit (the 20,000-row PostgreSQL table run, ~1.5 minutes, goes with it); the CeleryExecutor deployment ~4 minutes waiting on its quota and a lost worker's heartbeat, the
# batch watchdog's and batch route's tests ~3 minutes waiting for deadlines, cutoffs and jobs, and the
# real deployment of the integration tests (spend view, DAG runs, fast answers) ~3 minutes waiting for its
# DAG runs (little CPU), so they run beside the rest instead of after it, in two groups of their own. Their output follows the main group's; the
# target fails if any group fails.
# The compatibility matrix runs beside them too (its output in .matrix.log, each leg's in .pytest-matrix-*.log).
LOAD_TESTS := tests/reliability/test_load.py tests/enrichment/test_table_at_scale.py
WAITING_TESTS := tests/integration/test_celery_deployment.py tests/enrichment/test_batch_watchdog.py \
	tests/enrichment/test_batch_route.py tests/integration/test_spend_view.py \
	tests/integration/test_real_airflow.py tests/integration/test_fast_answers.py
# The example DAGs run through the Airflow CLI, a process per DAG run: a group of their own beside the rest.
DAG_TESTS := tests/dags/test_example_dags.py
SIDE_TESTS := $(LOAD_TESTS) $(WAITING_TESTS) $(DAG_TESTS)
test: lint redis-server chromium postgresql dist
	@rm -f .pytest-load.log .pytest-waiting.log .pytest-dags.log .pytest-main.log .pytest-matrix-*.log .matrix.log
	@$(BIN)/python -m pytest -p no:cacheprovider $(LOAD_TESTS) > .pytest-load.log 2>&1 & load=$$!; \
	$(BIN)/python -m pytest -p no:cacheprovider $(WAITING_TESTS) > .pytest-waiting.log 2>&1 & waiting=$$!; \
	$(BIN)/python -m pytest -p no:cacheprovider $(DAG_TESTS) > .pytest-dags.log 2>&1 & dags=$$!; \
	$(BIN)/python scripts/compat_matrix.py dist/*.whl > .matrix.log 2>&1 & matrix=$$!; \
	$(BIN)/python -m pytest $(addprefix --ignore=,$(SIDE_TESTS)) 2>&1 | tee .pytest-main.log; main=$${PIPESTATUS[0]}; \
	wait $$load; loaded=$$?; wait $$waiting; waited=$$?; wait $$dags; dagged=$$?; wait $$matrix; matrixed=$$?; \
	echo "---- side group ($(LOAD_TESTS)) ----"; cat .pytest-load.log; \
	echo "---- side group ($(WAITING_TESTS)) ----"; cat .pytest-waiting.log; \
	echo "---- side group ($(DAG_TESTS)) ----"; cat .pytest-dags.log; \
	echo "---- compatibility matrix (each leg's log: .pytest-matrix-<leg>.log) ----"; cat .matrix.log; \
	for log in .pytest-matrix-*.log; do grep -E "^(FAILED|ERROR) " $$log | sed "s|^|$$log: |"; done; \
	echo "---- all groups ----"; \
	$(BIN)/python scripts/test_summary.py .pytest-main.log .pytest-load.log .pytest-waiting.log .pytest-dags.log \
		.pytest-matrix-*.log; \
	test $$main -eq 0 -a $$loaded -eq 0 -a $$waited -eq 0 -a $$dagged -eq 0 -a $$matrixed -eq 0

# The reliability suite alone (it is part of `make test` as well).
reliability: $(INSTALLED) redis-server
	$(BIN)/python -m pytest tests/reliability tests/integration

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .airflow .matrix .matrix-latest dist
