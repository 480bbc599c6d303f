"""The reliability suite (`make reliability`) uses the hook and operator fixtures."""

from __future__ import annotations

from tests.hooks.conftest import captured_logs, connection, emulator, set_connection  # noqa: F401
from tests.operators.conftest import airflow_db, run_dag_file  # noqa: F401
