"""GeminiFlexEnrichOperator's batch and auto routes against the emulator's Batch API: every row once, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.emulator.batch import BatchSettings
from airflow_provider_flex.enrichment.batch_route import display_name_for
from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
from tests.hooks.conftest import API_KEY

POLICY = FlexRetryPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.5, jitter=0.0, deadline=600)
SCHEMA = {"type": "object", "properties": {"category": {"type": "string"}}, "required": ["category"]}


def _rows(n: int) -> list[dict]:
    return [{"id": f"p{i:04d}", "title": f"product {i}"} for i in range(n)]


def _operator(output: Path, **kwargs) -> GeminiFlexEnrichOperator:
    kwargs.setdefault("records", _rows(60))
    kwargs.setdefault("retry_policy", POLICY)
    kwargs.setdefault("batch_poll_interval", 0.2)
    kwargs.setdefault("deferrable", False)
    return GeminiFlexEnrichOperator(
        task_id="enrich",
        key_field="id",
        prompt_template="Categorise {{ row.title }}",
        output_path=str(output),
        **kwargs,
    )


def _results(output: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(output.glob("results-*.jsonl")) for line in f.read_text().splitlines()]


def _emulator(**settings) -> FlexEmulator:
    batch = BatchSettings(**settings.pop("batch", {"turnaround_s": 0.5}))
    return FlexEmulator(seed=3, batch=batch, **settings)


def test_batch_route_answers_every_row_once_through_failed_lines_shuffling_and_lost_metadata(set_connection, tmp_path):
    settings = {"turnaround_s": 0.3, "error_rate": 0.2, "shuffle": True, "drop_metadata": True}
    with _emulator(batch=settings) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        summary = _operator(tmp_path, route="batch", response_schema=SCHEMA).execute(context={})
        flex_calls = emulator.admin.stats()["requests"]
        jobs = emulator.admin.batches()
    results = _results(tmp_path)
    assert sorted(r["key"] for r in results) == [row["id"] for row in _rows(60)]
    assert {r["route"] for r in results} == {"batch"} and {r["service_tier"] for r in results} == {"batch"}
    assert all(r["parsed"]["category"] for r in results)
    assert flex_calls == 0
    assert summary["rows_by_route"] == {"flex": 0, "batch": 60} and summary["failed"] == 0
    assert summary["cost_usd"] == pytest.approx(summary["standard_cost_usd"] / 2, rel=0.01)
    assert len(summary["batch_jobs"]) >= 2, "the first job's unmatched answers and failed lines go to later jobs"
    assert jobs == [], "finished jobs are deleted once their answers are written"
    assert not list(tmp_path.glob("batch-*.json")), "no checkpoint is left once every row is answered"


def test_auto_route_keeps_for_flex_what_it_can_finish_by_the_deadline(set_connection, tmp_path):
    with _emulator(rpm=120, quota_window="sliding") as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        summary = _operator(
            tmp_path, records=_rows(90), route="auto", finish_by=timedelta(seconds=15), requests_per_minute=120
        ).execute(context={})
        stats = emulator.admin.stats()
    results = _results(tmp_path)
    assert sorted(r["key"] for r in results) == [row["id"] for row in _rows(90)]
    by_route = summary["rows_by_route"]
    assert by_route["flex"] + by_route["batch"] == 90 and by_route["flex"] >= 15 and by_route["batch"] >= 45
    assert stats["calls"]["flex"]["ok"] == by_route["flex"], "no row is answered on both routes"
    flex_keys = {r["key"] for r in results if r["route"] == "flex"}
    assert max(flex_keys) < min(r["key"] for r in results if r["route"] == "batch"), (
        "flex takes the head, batch the tail"
    )
    assert summary["cost_usd"] == pytest.approx(summary["standard_cost_usd"] / 2, rel=0.01)


@pytest.mark.parametrize("ending", ["EXPIRED", "FAILED"])
def test_rows_of_an_expired_or_failed_job_are_resubmitted_not_lost(set_connection, tmp_path, ending):
    with _emulator() as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        emulator.admin.batch_fate(ending)
        summary = _operator(tmp_path, records=_rows(20), route="batch").execute(context={})
    assert sorted(r["key"] for r in _results(tmp_path)) == [row["id"] for row in _rows(20)]
    assert [job["state"] for job in summary["batch_jobs"]] == [ending.lower(), "succeeded"]


def test_rows_become_dead_letters_with_their_reason_only_after_the_policys_attempts(set_connection, tmp_path):
    with _emulator(batch={"turnaround_s": 0.1, "error_rate": 1.0}) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        with pytest.raises(FlexError, match="5 of 5 rows failed"):
            _operator(tmp_path, records=_rows(5), route="batch").execute(context={})
        assert len(emulator.admin.batches()) == 0
    failed = [json.loads(line) for f in tmp_path.glob("failed*.jsonl") for line in f.read_text().splitlines()]
    assert sorted(row["key"] for row in failed) == [row["id"] for row in _rows(5)]
    assert all("Internal error encountered" in row["error"] for row in failed)
    assert not list(tmp_path.glob("batch-*.json"))


def test_enqueued_token_refusals_split_or_wait_and_drop_nothing(set_connection, tmp_path):
    with _emulator(batch={"turnaround_s": 0.3, "enqueued_tokens": 400}) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        summary = _operator(tmp_path, records=_rows(200), route="batch").execute(context={})
    assert sorted(r["key"] for r in _results(tmp_path)) == [row["id"] for row in _rows(200)]
    assert len(summary["batch_jobs"]) >= 2


def test_a_job_created_before_a_crash_is_found_by_its_display_name_not_created_twice(set_connection, tmp_path):
    """The window between create and the checkpoint's second write: the checkpoint has no job name yet."""
    from airflow_provider_flex.hooks.batch import BatchRequest
    from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook

    rows = _rows(10)
    with _emulator(batch={"turnaround_s": 0.5}) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        name = display_name_for(str(tmp_path), "crashed00001")
        checkpoint = {
            "id": "crashed00001",
            "display_name": name,
            "model": "gemini-2.5-flash",
            "attempts": {row["id"]: 0 for row in rows},
            "job_name": None,
            "input_file": None,
            "state": "unsubmitted",
            "created": time.time(),
            "reasons": {},
        }
        (tmp_path / "batch-crashed00001.json").write_text(json.dumps(checkpoint))
        GeminiFlexHook().batches.submit(
            "gemini-2.5-flash",
            [BatchRequest(row["id"], f"Categorise {row['title']}") for row in rows],
            config=None,
            display_name=name,
        )
        summary = _operator(tmp_path, records=rows, route="batch").execute(context={})
        created = emulator.admin.stats()["batch_jobs"]
    assert sorted(r["key"] for r in _results(tmp_path)) == [row["id"] for row in rows]
    assert created == 0 and len(summary["batch_jobs"]) == 1, "the orphan was re-attached, no second job"


CRASHING_RUN = """
import sys
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
rows = [{"id": f"p{i:04d}", "title": f"product {i}"} for i in range(40)]
GeminiFlexEnrichOperator(
    task_id="enrich", key_field="id", prompt_template="Categorise {{ row.title }}", output_path=sys.argv[1],
    records=rows, route="batch", batch_poll_interval=0.2, deferrable=False,
    retry_policy=FlexRetryPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.5, deadline=600),
).execute(context={})
"""


def test_sigkill_right_after_create_then_rerun_makes_exactly_one_job_and_answers_every_row_once(
    set_connection, tmp_path
):
    output = tmp_path / "out"
    with _emulator(batch={"turnaround_s": 3.0}) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        script = tmp_path / "run.py"
        script.write_text(textwrap.dedent(CRASHING_RUN))
        process = subprocess.Popen([sys.executable, str(script), str(output)], env=os.environ.copy())
        try:
            deadline = time.monotonic() + 120
            while not emulator.admin.batches():
                assert process.poll() is None and time.monotonic() < deadline, "the run never created its job"
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=30)
        jobs_before = emulator.admin.batches()
        summary = _operator(output, records=_rows(40), route="batch").execute(context={})
        created_after = emulator.admin.stats()["batch_jobs"]
    assert len(jobs_before) == 1 and jobs_before[0]["state"] != "BATCH_STATE_SUCCEEDED"
    assert [job["name"] for job in summary["batch_jobs"]] == [jobs_before[0]["name"]]
    assert created_after == 0
    assert sorted(r["key"] for r in _results(output)) == [row["id"] for row in _rows(40)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"route": "cheap"}, "route must be one of flex, batch, auto"),
        ({"route": "auto"}, "route='auto' needs finish_by"),
        ({"route": "auto", "finish_by": datetime(2026, 1, 1)}, "aware datetime"),
        ({"route": "batch", "media_fields": ["photo"]}, "media_fields work on the flex route only"),
    ],
)
def test_bad_routes_fail_when_the_dag_is_parsed(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _operator(tmp_path, **kwargs)


def test_a_deadline_in_the_past_or_a_model_without_batch_fails_before_any_call_or_job(set_connection, tmp_path):
    with FlexEmulator(seed=1, batch_models=("gemini-2.5-pro",)) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        past = datetime.now(UTC) - timedelta(minutes=1)
        with pytest.raises(ValueError, match="is in the past"):
            _operator(tmp_path, route="auto", finish_by=past).execute(context={})
        with pytest.raises(FlexError, match=r"'gemini-2\.5-flash' does not take batch jobs"):
            _operator(tmp_path, route="batch", model="gemini-2.5-flash").execute(context={})
        stats = emulator.admin.stats()
    assert stats["requests"] == 0 and stats["batch_jobs"] == 0
    assert not list(tmp_path.glob("results-*.jsonl"))


def test_deferrable_batch_route_under_dag_test_waits_in_the_trigger(connection, run_dag_file, tmp_path):
    output = tmp_path / "out"
    dag_run = run_dag_file(
        f"""
        from datetime import datetime
        from airflow.sdk import DAG
        from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

        with DAG("flex_batch_deferred", schedule=None, start_date=datetime(2026, 1, 1)):
            GeminiFlexEnrichOperator(
                task_id="enrich",
                records=[{{"id": f"r{{i}}", "title": f"thing {{i}}"}} for i in range(12)],
                key_field="id",
                prompt_template="Describe {{{{ row.title }}}}",
                output_path={str(output)!r},
                route="batch",
                batch_poll_interval=0.2,
                deferrable=True,
            )
        """,
        "flex_batch_deferred",
    )
    assert dag_run.state == "success"
    assert sorted(r["key"] for r in _results(output)) == sorted(f"r{i}" for i in range(12))
    assert connection.admin.stats()["requests"] == 0
