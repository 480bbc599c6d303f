"""The batch watchdog: a job still unfinished past its cutoff is cancelled and flex serves its rows, once each.

The emulator's jobs stay RUNNING until cancelled (``BatchSettings(stuck=True)``), as users report of the
real Batch API (python-genai #1482, #2221, #2974).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.emulator.batch import BatchSettings
from airflow_provider_flex.enrichment.routing import DEADLINE_GRACE, job_cutoff
from airflow_provider_flex.hooks.batch import BatchRequest
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
from airflow_provider_flex.triggers.batch import GeminiFlexBatchTrigger
from tests.hooks.conftest import API_KEY

POLICY = FlexRetryPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.5, deadline=600)
ROWS = [{"id": f"p{i:04d}", "title": f"product {i}"} for i in range(150)]


def _operator(output: Path, **kwargs) -> GeminiFlexEnrichOperator:
    kwargs.setdefault("records", ROWS)
    kwargs.setdefault("batch_poll_interval", 60)
    return GeminiFlexEnrichOperator(
        task_id="enrich", key_field="id", prompt_template="Categorise {{ row.title }}", output_path=str(output),
        retry_policy=POLICY, deferrable=False, model="gemini-2.5-flash-lite",
        **kwargs,
    )  # fmt: skip


def _results(output: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(output.glob("results-*.jsonl")) for line in f.read_text().splitlines()]


def test_a_stuck_job_past_the_deadline_is_cancelled_and_flex_serves_its_rows_once(set_connection, tmp_path):
    with FlexEmulator(seed=3, rpm=600, quota_window="sliding", batch=BatchSettings(stuck=True)) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        started = time.monotonic()
        summary = _operator(tmp_path, route="auto", finish_by=timedelta(seconds=6), requests_per_minute=600
                            ).execute(context={})  # fmt: skip
        elapsed = time.monotonic() - started
        stats, jobs = emulator.admin.stats(), emulator.admin.batches()
    results = _results(tmp_path)
    keys = [r["key"] for r in results]
    assert sorted(keys) == [row["id"] for row in ROWS] and len(set(keys)) == len(keys), "every row once"
    assert summary["late_rows"] > 0 and sum(summary["late_jobs"].values()) == summary["late_rows"]
    assert summary["rows_by_route"] == {"flex": 150, "batch": 0} and summary["in_batch"] == 0
    assert stats["calls"]["flex"]["ok"] == 150, "no row was answered by the cancelled job"
    assert jobs == [] and list(summary["late_jobs"]) == [job["name"] for job in summary["batch_jobs"]]
    assert summary["batch_jobs"][0]["state"] == "cancelled", "the stuck job was cancelled (then deleted)"
    # the deadline (6 s), the grace, and the late rows at 10 rows/s: not a poll interval (60 s) more
    assert elapsed < 6 + DEADLINE_GRACE.total_seconds() + summary["late_rows"] / 10 + 20


def test_batch_max_wait_bounds_a_batch_only_run(set_connection, tmp_path):
    with FlexEmulator(seed=3, batch=BatchSettings(stuck=True)) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        summary = _operator(tmp_path, records=ROWS[:20], route="batch", batch_max_wait=2.0).execute(context={})
        jobs = emulator.admin.batches()
    assert sorted(r["key"] for r in _results(tmp_path)) == [row["id"] for row in ROWS[:20]]
    assert summary["late_rows"] == 20 and summary["rows_by_route"]["flex"] == 20 and jobs == []


def test_the_deferred_wait_wakes_at_the_cutoff_and_names_a_cancelled_job_as_such(set_connection):
    with FlexEmulator(seed=3, batch=BatchSettings(stuck=True)) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        job = GeminiFlexHook().batches.submit("gemini-2.5-flash-lite", [BatchRequest("a", "hi")], config=None,
                                              display_name="stuck")  # fmt: skip
        wake_at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()

        async def first_event(trigger: GeminiFlexBatchTrigger) -> dict:
            return (await anext(trigger.run())).payload

        started = time.monotonic()
        woken = asyncio.run(first_event(GeminiFlexBatchTrigger([job.name], "gemini_flex_default", 30, wake_at)))
        assert woken["status"] == "cutoff" and time.monotonic() - started < 10
        GeminiFlexHook().batches.cancel(job.name)
        ended = asyncio.run(first_event(GeminiFlexBatchTrigger([job.name], "gemini_flex_default", 30)))
    assert ended == {"status": "ended", "job": job.name, "state": "cancelled"}


def test_the_cutoff_is_the_deadline_plus_grace_or_the_jobs_max_wait():
    deadline = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    created = deadline - timedelta(minutes=30)
    day = timedelta(hours=24)
    assert job_cutoff(route="auto", deadline=deadline, created=created, max_wait=day) == deadline + DEADLINE_GRACE
    assert job_cutoff(route="auto", deadline=deadline, created=created, max_wait=timedelta(minutes=5)) == (
        created + timedelta(minutes=5)
    )
    assert job_cutoff(route="batch", deadline=None, created=created, max_wait=day) == created + day


def test_an_unreachable_deadline_is_said_before_the_first_call_and_fails_if_asked(set_connection, tmp_path):
    from airflow_provider_flex.exceptions import FlexError

    with FlexEmulator(seed=3, rpm=600, quota_window="sliding") as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        strict = {"route": "auto", "finish_by": timedelta(seconds=6), "requests_per_minute": 600,
                  "on_unreachable_deadline": "fail"}  # fmt: skip
        try:
            _operator(tmp_path / "strict", **strict).execute(context={})
            raise AssertionError("the task should have failed before its first call")
        except FlexError as refused:
            message = str(refused)
        assert "cannot be met" in message and "rows will be about" in message and "no call was made" in message
        assert emulator.admin.stats()["requests"] == 0 and emulator.admin.batches() == []
        # this output's own jobs took a second: planned with that, the deadline can be met
        (tmp_path / "known").mkdir()
        (tmp_path / "known" / "batch_turnarounds.json").write_text("[1.0, 1.2, 0.8]")
        summary = _operator(tmp_path / "known", batch_poll_interval=0.2, **strict).execute(context={})
    assert summary["succeeded"] == 150


def test_the_outlook_of_late_rows_is_a_pure_rule():
    from airflow_provider_flex.enrichment.routing import late_rows_outlook

    assert late_rows_outlook(900, None, 60, 86_400) is None, "an unknown rate: nothing to say yet"
    assert late_rows_outlook(100, 5.0, 60, 86_400) is None, "flex reaches every row"
    assert late_rows_outlook(900, 5.0, 60, 30) is None, "batch answers in time"
    late, late_by = late_rows_outlook(900, 5.0, 60, 86_400)
    assert late == 900 - 270 and late_by == DEADLINE_GRACE.total_seconds() + 630 / 5.0


def test_a_deferred_task_is_woken_at_the_cutoff_and_flex_serves_the_stuck_jobs_rows(
    set_connection, run_dag_file, tmp_path
):
    output = tmp_path / "out"
    with FlexEmulator(seed=3, batch=BatchSettings(stuck=True)) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        dag_run = run_dag_file(
            f"""
            from datetime import datetime
            from airflow.sdk import DAG
            from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

            with DAG("flex_batch_deferred_stuck", schedule=None, start_date=datetime(2026, 1, 1)):
                GeminiFlexEnrichOperator(
                    task_id="enrich",
                    records=[{{"id": f"r{{i}}", "title": f"thing {{i}}"}} for i in range(12)],
                    key_field="id",
                    prompt_template="Describe {{{{ row.title }}}}",
                    output_path={str(output)!r},
                    model="gemini-2.5-flash-lite",
                    route="batch",
                    batch_max_wait=2,
                    batch_poll_interval=60,
                    deferrable=True,
                )
            """,
            "flex_batch_deferred_stuck",
        )
        jobs, flex_ok = emulator.admin.batches(), emulator.admin.stats()["calls"]["flex"]["ok"]
    assert dag_run.state == "success"
    assert sorted(r["key"] for r in _results(output)) == sorted(f"r{i}" for i in range(12))
    assert jobs == [] and flex_ok == 12, "the stuck job was cancelled; flex answered its rows, each once"


def test_a_handful_of_rows_is_held_for_the_next_job_not_made_a_job_of_its_own():
    from airflow_provider_flex.enrichment.routing import MIN_BATCH_JOB_ROWS, rows_for_a_job

    few = [f"k{i}" for i in range(3)]
    assert rows_for_a_job([], few, small_too=False) == ([], few), "held"
    more = [f"m{i}" for i in range(MIN_BATCH_JOB_ROWS)]
    assert rows_for_a_job(few, more, small_too=False) == (few + more, []), "held rows join the next job"
    assert rows_for_a_job(few, [], small_too=True) == (few, []), "flex stopped: batch is their only way"
    assert rows_for_a_job([], [], small_too=False) == ([], [])


def test_a_job_whose_cancel_lost_the_race_is_collected_not_sent_to_flex(set_connection, tmp_path):
    import logging

    from airflow_provider_flex.enrichment.batch_route import BatchRoute
    from airflow_provider_flex.enrichment.records import PromptTemplate
    from airflow_provider_flex.enrichment.request import EnrichRequest
    from airflow_provider_flex.enrichment.store import OutputStore

    rows = ROWS[:5]
    with FlexEmulator(seed=3, batch=BatchSettings(stuck=True)) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        hook = GeminiFlexHook(retry_policy=POLICY)
        request = EnrichRequest(
            task="Task 'enrich'", key_field="id", template=PromptTemplate("Categorise {{ row.title }}"),
            output_path=str(tmp_path), records=rows, route="batch", batch_max_wait=timedelta(seconds=1),
        ).resolved("gemini-2.5-flash-lite")  # fmt: skip
        store = OutputStore(str(tmp_path))
        route = BatchRoute(request, batches=hook.batches, store=store, max_attempts=3, log=logging.getLogger("t"))
        route.take([row["id"] for row in rows])

        async def race() -> None:
            await route.step()  # the job is created
            (checkpoint,) = route.checkpoints.values()
            checkpoint.cancel_requested = True  # the watchdog asked to cancel it...
            emulator.admin.end_batch(checkpoint.job_name, "SUCCEEDED")  # ...but it succeeded first
            await route.step()

        asyncio.run(race())
    assert sorted(r["key"] for r in _results(tmp_path)) == [row["id"] for row in rows], "its answers were collected"
    assert route.late_rows.empty() and route.stats.late == {} and not route.checkpoints
