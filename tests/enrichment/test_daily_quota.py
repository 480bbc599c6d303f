"""A per-day quota running out mid-enrichment: stop cleanly, lose nothing, resume after the reset."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.exceptions import FlexQuotaExhausted
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
from tests.deployment import AIRFLOW, airflow_env
from tests.hooks.conftest import API_KEY

MODEL = "gemini-2.5-flash"
PATIENT = FlexRetryPolicy(max_attempts=30, initial_delay=0.05, max_delay=0.5, jitter=0.5, deadline=120)
DAY_QUOTA = "GenerateRequestsPerDayPerProjectPerModel"


def _rows(n: int) -> list[dict]:
    return [{"id": f"p{i:05d}", "title": f"product number {i}"} for i in range(n)]


def _operator(output: Path, rows: list[dict]) -> GeminiFlexEnrichOperator:
    return GeminiFlexEnrichOperator(
        task_id="enrich",
        records=rows,
        key_field="id",
        prompt_template="Categorise product {{ row.id }}: {{ row.title }}",
        output_path=str(output),
        model=MODEL,
        max_concurrency=8,
        retry_policy=PATIENT,
    )


def _results(output: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(output.glob("results-*.jsonl")) for line in f.read_text().splitlines()]


def _failed(output: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(output.glob("failed*.jsonl")) for line in f.read_text().splitlines()]


def test_a_spent_day_stops_the_run_then_a_rerun_after_the_reset_finishes_without_repeating_a_row(
    set_connection, tmp_path
):
    rows = _rows(300)
    with FlexEmulator(rpd=200, slots=8, service_time=(0.01, 0.03), preempt_rate=0.1, seed=3) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        started = time.monotonic()
        with pytest.raises(FlexQuotaExhausted) as raised:
            _operator(tmp_path, rows).execute(context={})
        stopped_after = time.monotonic() - started
        calls = emulator.admin.calls()
        message = str(raised.value)
        assert f"Daily quota exhausted for model {MODEL}: requests per day ({DAY_QUOTA}, limit 200)" in message
        assert "resets at" in message

        # every answer of the day is a result (shed calls count toward the day too); nothing is a dead
        # letter; no row was written twice
        first = _results(tmp_path)
        answered_first = len([c for c in calls if c["outcome"] == "ok"])
        assert 150 < len(first) == answered_first == len({r["key"] for r in first})
        assert _failed(tmp_path) == []
        # after the first per-day 429 no new call started: only calls already in flight reached the API after
        # it, and each was refused (the log records a refusal on arrival, an answer when it is served)
        refused = [c for c in calls if c["outcome"] == "rate_limited"]
        assert 1 <= len(refused) <= 8
        assert stopped_after < 30  # it stopped; it did not retry a spent day

        emulator.admin.end_day()  # midnight in Los Angeles
        summary = _operator(tmp_path, rows).execute(context={})
        answered = [c["prompt"] for c in emulator.admin.calls() if c["outcome"] == "ok"]

    assert (summary["skipped"], summary["succeeded"], summary["failed"]) == (len(first), 300 - len(first), 0)
    results = _results(tmp_path)
    assert sorted(r["key"] for r in results) == sorted(r["id"] for r in rows)
    assert len(answered) == 300 == len(set(answered))  # every row paid for exactly once


WAIT_DAG = """
    from datetime import datetime

    from airflow.sdk import DAG

    from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

    with DAG("quota_wait", start_date=datetime(2026, 1, 1), schedule=None, catchup=False):
        GeminiFlexEnrichOperator(
            task_id="enrich",
            records=[{{"id": f"r{{i:03d}}", "text": f"row {{i}}"}} for i in range(50)],
            key_field="id",
            prompt_template="Tag {{{{ row.text }}}}",
            output_path="{output}",
            model="gemini-2.5-flash",
            max_concurrency=4,
            on_daily_quota="wait",
            daily_quota_recheck=2,
        )
"""


def test_on_daily_quota_wait_defers_until_the_reset_and_carries_on(tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    output = tmp_path / "out"
    (dags / "quota_wait.py").write_text(textwrap.dedent(WAIT_DAG.format(output=output)))
    with FlexEmulator(rpd=30, slots=4, service_time=(0.01, 0.02)) as emulator:
        env = airflow_env(
            tmp_path / "home", dags, AIRFLOW_CONN_GEMINI_FLEX_DEFAULT=emulator.connection_json(initial_delay=0.05)
        )
        subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, check=True, timeout=300)
        run = subprocess.Popen(
            [AIRFLOW, "dags", "test", "quota_wait"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 240
        while not emulator.admin.stats()["quota_refusals"].get(DAY_QUOTA):
            assert run.poll() is None, run.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the run never reached its daily quota"
            time.sleep(0.2)
        time.sleep(3)  # the task is deferred now, waiting for the day to turn
        emulator.admin.end_day()
        console, _ = run.communicate(timeout=240)
        answered = [c["prompt"] for c in emulator.admin.calls() if c["outcome"] == "ok"]
    assert run.returncode == 0, console[-3000:]
    assert "state=success" in console
    assert "Waiting for the daily quota: deferring until" in console
    assert sorted(r["key"] for r in _results(output)) == [f"r{i:03d}" for i in range(50)]
    assert len(answered) == 50 == len(set(answered))
