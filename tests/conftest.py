"""Test-wide set-up: an isolated Airflow home before anything imports airflow."""

from __future__ import annotations

import os
import tempfile

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="airflow-provider-flex-tests-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
for _name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
    os.environ.pop(_name, None)
