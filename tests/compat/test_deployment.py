"""The smoke DAG on a real deployment of this leg's Airflow: scheduler, dag-processor, triggerer, api-server.

`airflow dags test` runs a trigger in line and resumes the task on the worker, so only a deployment shows
that a deferrable flex task ends in the triggerer with its result as a usable XCom: through
``XCom.aset`` on Airflow 3.3, through ``TaskSuccessEvent(xcoms=...)`` before (airflow_provider_flex.compat).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
SMOKE_DAG = Path(__file__).resolve().parent / "dags" / "flex_compat_smoke.py"
API_KEY = "compat-deployment-key"

pytestmark = pytest.mark.slow


def _deployment_module():
    """Return tests/deployment.py, loaded by path: the source tree stays off sys.path (the wheel is tested)."""
    spec = importlib.util.spec_from_file_location("flex_test_deployment", REPO / "tests" / "deployment.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_deferred_task_ends_in_the_triggerer_with_its_result(tmp_path):
    from airflow_provider_flex.compat import TRIGGERER_RENDERS_START_ARGUMENTS
    from airflow_provider_flex.emulator import FlexEmulator

    deployment = _deployment_module()
    report = tmp_path / "report.json"
    with FlexEmulator(api_key=API_KEY, slots=8, service_time=(0.05, 0.2), seed=4) as emulator:
        env = {
            "AIRFLOW_CONN_GEMINI_FLEX_DEFAULT": emulator.connection_json(API_KEY, initial_delay=0.2),
            "FLEX_SMOKE_OUTPUT": str(tmp_path / "output"),
            "FLEX_SMOKE_REPORT": str(report),
        }
        dags = deployment.link_dags(tmp_path / "dags", [SMOKE_DAG])
        with deployment.AirflowDeployment(tmp_path / "home", dags, env) as airflow:
            run_id = airflow.trigger("flex_compat_smoke")
            state = airflow.wait_for_run("flex_compat_smoke", run_id, timeout=300)
            assert state == "success", _why_it_failed(airflow, run_id)
            tries = airflow.query(
                "SELECT state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
                "flex_compat_smoke",
                run_id,
                "deferred_generate",
            )
            triggerer_jobs = {row[0] for row in airflow.query("SELECT id FROM job WHERE job_type = 'TriggererJob'")}
            logs = airflow.home / "logs" / "dag_id=flex_compat_smoke" / f"run_id={run_id}" / "task_id=deferred_generate"
            # the spend view is mounted on this Airflow's api-server, and asks who is asking
            spend = httpx.get(f"{airflow.api_url}/flex/api/runs", timeout=30)
        # read once every component has stopped, so SQLite's journal files no longer come and go
        leaks, _ = deployment.files_holding(tmp_path, API_KEY.encode())
    assert tries == [("success", 1)]
    # the check task read the trigger's result as a dict (not JSON text) and wrote what it saw
    assert json.loads(report.read_text())["deferred"]
    trigger_logs = list(logs.glob("attempt=1.log.trigger.*.log"))
    assert len(trigger_logs) == 1, list(logs.iterdir())
    assert int(trigger_logs[0].name.rsplit(".", 2)[-2]) in triggerer_jobs  # written by the triggerer process
    assert "Flex result:" in trigger_logs[0].read_text()
    worker_log = logs / "attempt=1.log"
    if TRIGGERER_RENDERS_START_ARGUMENTS:  # Airflow 3.3+: started in the triggerer, no worker at all
        assert not worker_log.exists() or "Pausing task as DEFERRED" not in worker_log.read_text()
    else:  # the worker rendered the arguments and deferred; it never resumed the task
        text = worker_log.read_text()
        assert "Pausing task as DEFERRED" in text and "Flex result:" not in text
    assert leaks == []
    assert spend.status_code == 401, spend.text[:300]


def _why_it_failed(airflow, run_id: str) -> str:
    """Return each task's state and the end of every failed task's logs (worker and trigger)."""
    states = airflow.query(
        "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
        "flex_compat_smoke",
        run_id,
    )
    lines = [f"task states: {states}"]
    run_logs = airflow.home / "logs" / "dag_id=flex_compat_smoke" / f"run_id={run_id}"
    for task_id, state, _ in states:
        if state != "success":
            for log in sorted((run_logs / f"task_id={task_id}").glob("*")):
                lines.append(f"--- {log.name}\n{log.read_text(errors='replace')[-2500:]}")
    return "\n".join(lines)
