"""Test-wide set-up: an isolated Airflow home before anything imports airflow."""

from __future__ import annotations

import os
import tempfile

import pytest

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="airflow-provider-flex-tests-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
# dag.test() re-parses the DAG from the dags folder: tests write their DAG files here.
TEST_DAGS_FOLDER = os.path.join(_AIRFLOW_HOME, "dags")
os.makedirs(TEST_DAGS_FOLDER, exist_ok=True)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = TEST_DAGS_FOLDER
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
for _name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
    os.environ.pop(_name, None)


@pytest.fixture(autouse=True)
def _fresh_process_state():
    """Each test starts with no quota limiter and no shared client: one test's emulator must not reach the next."""
    from airflow_provider_flex.process_state import PROCESS

    PROCESS.reset()
    yield
    PROCESS.reset()
