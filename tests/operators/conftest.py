from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.hooks.conftest import captured_logs, connection, emulator, set_connection  # noqa: F401


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """The metadata DB that dag.test() needs, made by the real `airflow db migrate`."""
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run(
        [airflow, "db", "migrate"], env=os.environ.copy(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture
def run_dag_file(airflow_db):
    """Write a DAG file into the dags folder, load it as the scheduler would, and run it with dag.test()."""

    def run(source: str, dag_id: str):
        from airflow.dag_processing.dagbag import DagBag

        path = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{dag_id}.py"
        path.write_text(textwrap.dedent(source))
        bag = DagBag(dag_folder=str(path))
        assert bag.import_errors == {}, bag.import_errors
        return bag.get_dag(dag_id).test()

    return run
