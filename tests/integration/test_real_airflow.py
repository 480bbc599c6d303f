"""The example DAGs on a real Airflow: api-server, scheduler, dag-processor and triggerer processes.

One deployment for the module (about a minute to start and run here). It proves
what `airflow dags test` cannot: deferred tasks pass through the triggerer
process, the pool caps concurrent flex calls, and the API key stays out of
every file the deployment writes (task logs, trigger logs, consoles, the
metadata database with its XComs, rendered fields and triggers).
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.deployment import AirflowDeployment, files_holding
from tests.integration.conftest import API_KEY, POOL_SLOTS, REPO_DAGS

DAGS = REPO_DAGS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def judge_run(airflow, emulator):
    """One scheduled run of flex_llm_judge_eval; its run id."""
    emulator.admin.reset()
    run_id = airflow.trigger("flex_llm_judge_eval")
    assert airflow.wait_for_run("flex_llm_judge_eval", run_id, timeout=400) == "success", _consoles(airflow)
    return run_id


def test_mapped_judge_tasks_defer_through_the_triggerer_process(airflow, judge_run):
    candidates = (DAGS / "data" / "eval_candidates.jsonl").read_text().splitlines()
    triggerer_jobs = {row[0] for row in airflow.query("SELECT id FROM job WHERE job_type = 'TriggererJob'")}
    assert triggerer_jobs
    judges = airflow.query(
        "SELECT map_index, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = 'judge'",
        "flex_llm_judge_eval",
        judge_run,
    )
    assert sorted(judges) == [(i, "success", 1) for i in range(len(candidates))]
    run_logs = airflow.home / "logs" / "dag_id=flex_llm_judge_eval" / f"run_id={judge_run}" / "task_id=judge"
    for map_index in range(len(candidates)):
        task_log = (run_logs / f"map_index={map_index}" / "attempt=1.log").read_text()
        # the worker only deferred (a mapped task cannot start in the triggerer); it never resumed
        assert "Pausing task as DEFERRED" in task_log
        assert "Flex result:" not in task_log and task_log.count("::group::Pre Execute") == 1
        trigger_logs = list((run_logs / f"map_index={map_index}").glob("attempt=1.log.trigger.*.log"))
        assert len(trigger_logs) == 1, trigger_logs
        # written by the triggerer process (its job id in the name): the call ran there, and the task ended there
        assert int(trigger_logs[0].name.rsplit(".", 2)[-2]) in triggerer_jobs
        trigger_log = trigger_logs[0].read_text()
        assert "Flex result:" in trigger_log and "Trigger fired event" in trigger_log


def test_pool_counting_deferred_tasks_caps_concurrent_flex_calls(airflow, emulator, judge_run):
    stats = emulator.admin.stats()
    assert stats["calls"]["flex"]["ok"] == len((DAGS / "data" / "eval_candidates.jsonl").read_text().splitlines())
    assert set(stats["calls_by_tier"]) == {"flex"}
    assert 1 <= stats["peak_in_flight"] <= POOL_SLOTS


def test_scores_land_in_the_sql_table(airflow, judge_run):
    with sqlite3.connect(airflow.home.parent / "demo.db") as db:
        rows = db.execute("SELECT candidate_id, score FROM judge_scores WHERE run_id = ?", (judge_run,)).fetchall()
    assert len(rows) == 12 and all(1 <= score <= 5 for _, score in rows)


def test_api_key_is_in_no_file_the_deployment_wrote(airflow, judge_run):
    """Task and trigger logs, component consoles, the metadata DB (XCom, rendered fields, triggers)."""
    leaks, files = files_holding(airflow.home.parent, API_KEY.encode())
    assert any("task_id=judge" in str(path) for path in files)
    assert any(path.name == "airflow.db" for path in files)
    assert leaks == []


def test_the_reviews_tables_asset_event_schedules_the_report(airflow):
    """flex_reviews_report is scheduled on the table flex_reviews_table loads: the scheduler starts it from the
    asset event, whose extra carries what the enrichment did."""
    airflow.wait_for_dag("flex_reviews_report")
    airflow.cli("dags", "unpause", "flex_reviews_report")
    run_id = airflow.trigger("flex_reviews_table")
    assert airflow.wait_for_run("flex_reviews_table", run_id, timeout=300) == "success", _consoles(airflow)

    def report_run() -> tuple | None:
        rows = airflow.query(
            "SELECT run_id, state FROM dag_run WHERE dag_id = 'flex_reviews_report' AND run_type = 'asset_triggered'"
        )
        return rows[0] if rows and rows[0][1] in ("success", "failed") else None

    report = airflow._wait(report_run, 240, "flex_reviews_report's run from the asset event")
    (extra,) = airflow.query(
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri LIKE 'x-gemini-flex-table%'"
    )[0]
    event = json.loads(extra)
    assert report[1] == "success", _consoles(airflow)
    assert (event["rows"], event["succeeded"], event["failed"], event["table"]) == (25, 25, 5, "reviews_enriched")


def _consoles(airflow: AirflowDeployment) -> str:
    return "\n".join(
        f"--- {c}\n{airflow.console(c).read_text(errors='replace')[-1500:]}"
        for c in ("scheduler", "triggerer", "dag-processor")
    )
