from tests.hooks.conftest import captured_logs, connection, emulator, set_connection, times_logged  # noqa: F401
from tests.operators.conftest import airflow_db, run_dag_file  # noqa: F401
