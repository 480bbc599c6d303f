"""The compatibility matrix's smoke suite, run by ``make test`` in one virtual environment per Airflow release.

It runs against the installed wheel (never the source tree) and loads no other conftest: each
environment has only Airflow, the provider's wheel with its ``examples`` extra, and pytest.
"""

from __future__ import annotations

import os
import tempfile

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="airflow-provider-flex-compat-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
for _name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
    os.environ.pop(_name, None)
