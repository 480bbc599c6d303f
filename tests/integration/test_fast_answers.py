"""Deferred calls that answer at once, on a busy deployment: no task is failed by the deferral race, no call is paid twice.

apache/airflow#71580 (open in 3.3): a trigger firing within seconds of the deferral
can resume the task before the scheduler has processed the deferring worker's exit,
and the scheduler then fails the running task, whose retry sends the call again.
Our deferrable generate tasks end in the triggerer (the result pushed as XCom there),
so no worker resumes them: the race has nothing to race. Non-mapped tasks also start
there, with no worker at all.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

pytestmark = pytest.mark.slow

DAG_ID = "flex_fast_answers"
MAPPED, SINGLE = 24, 4
RUNS = 3


@contextmanager
def busy_cpus(count: int) -> Iterator[None]:
    """``count`` processes spinning beside the deployment, as other work on a shared machine would."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


@pytest.fixture(scope="module")
def fast_runs(airflow, emulator) -> list[str]:
    """Three runs of the fast-answers DAG, one after another, with two CPUs' worth of load beside them."""
    runs = []
    with busy_cpus(2):
        for _ in range(RUNS):
            run_id = airflow.trigger(DAG_ID)
            assert airflow.wait_for_run(DAG_ID, run_id, timeout=400) == "success", _failures(airflow, run_id)
            runs.append(run_id)
    return runs


def test_every_task_of_every_run_succeeds_at_its_first_try(airflow, fast_runs):
    for run_id in fast_runs:
        rows = airflow.query(
            "SELECT task_id, map_index, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
            DAG_ID,
            run_id,
        )
        flex = [row for row in rows if row[0] == "mapped" or row[0].startswith("single_")]
        assert len(flex) == MAPPED + SINGLE
        assert {(state, try_number) for _, _, state, try_number in rows} == {("success", 1)}, rows


def test_each_call_reached_the_api_exactly_once(emulator, fast_runs):
    calls = emulator.admin.calls()
    for run_id in fast_runs:
        prompts = Counter(call["prompt"] for call in calls if run_id in call["prompt"])
        assert len(prompts) == MAPPED + SINGLE
        assert set(prompts.values()) == {1}, [p for p, n in prompts.items() if n > 1]
        assert all(call["outcome"] == "ok" for call in calls if run_id in call["prompt"])


def test_templated_arguments_render_in_the_triggerer(emulator, fast_runs):
    run_id = fast_runs[0]
    singles = [c["prompt"] for c in emulator.admin.calls() if run_id in c["prompt"] and "single" in c["prompt"]]
    assert sorted(singles) == sorted(
        f"Answer in one line for {DAG_ID}.\nFast single question {i} about quotas in {run_id}" for i in range(SINGLE)
    )


def test_non_mapped_tasks_never_touch_a_worker(airflow, fast_runs):
    logs = airflow.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={fast_runs[0]}"
    for i in range(SINGLE):
        task_logs = sorted(path.name for path in (logs / f"task_id=single_{i}").iterdir())
        assert len(task_logs) == 1 and task_logs[0].startswith("attempt=1.log.trigger."), task_logs
    mapped_logs = sorted(path.name for path in (logs / "task_id=mapped" / "map_index=0").iterdir())
    assert mapped_logs[0] == "attempt=1.log" and mapped_logs[1].startswith("attempt=1.log.trigger.")


def _failures(airflow, run_id: str) -> str:
    rows = airflow.query(
        "SELECT task_id, map_index, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
        DAG_ID,
        run_id,
    )
    scheduler = airflow.console("scheduler").read_text(errors="replace")
    return f"{rows}\n{scheduler[-3000:]}"
