"""Refusals about the run (a wrong key, an unknown model, a config every row fails) stop it; no row is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.enrichment.engine import RUN_WIDE_400_ROWS, refuses_the_run
from airflow_provider_flex.exceptions import FlexRequestError
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
from tests.hooks.conftest import API_KEY

POLICY = FlexRetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=0.2, jitter=0.0, deadline=60)
ROWS = [{"id": f"t{i:03d}", "text": f"ticket {i}"} for i in range(300)]


def _operator(output: Path, **kwargs) -> GeminiFlexEnrichOperator:
    kwargs.setdefault("max_concurrency", 8)
    kwargs.setdefault("records", ROWS)
    return GeminiFlexEnrichOperator(
        task_id="triage",
        key_field="id",
        prompt_template="Triage {{ row.text }}",
        output_path=str(output),
        retry_policy=POLICY,
        **kwargs,
    )


def _lines(output: Path, pattern: str) -> list[dict]:
    return [json.loads(line) for f in output.glob(pattern) for line in f.read_text().splitlines()]


def test_the_rule_is_a_pure_function():
    assert all(refuses_the_run(code, same_400_rows=0, any_succeeded=True) for code in (401, 403, 404))
    assert not refuses_the_run(400, same_400_rows=RUN_WIDE_400_ROWS, any_succeeded=True)
    assert not refuses_the_run(400, same_400_rows=RUN_WIDE_400_ROWS - 1, any_succeeded=False)
    assert refuses_the_run(400, same_400_rows=RUN_WIDE_400_ROWS, any_succeeded=False)
    assert not refuses_the_run(413, same_400_rows=9, any_succeeded=False)


def test_a_wrong_key_stops_the_run_after_the_calls_in_flight_and_a_rerun_does_every_row(
    set_connection, tmp_path, captured_logs
):
    with FlexEmulator(seed=1, api_key=API_KEY, service_time=(0.01, 0.02)) as emulator:
        set_connection(host=emulator.base_url, password="not-the-key-0000")
        with pytest.raises(FlexRequestError) as refused:
            _operator(tmp_path).execute(context={})
        sent_with_bad_key = emulator.admin.stats()["api_requests"]
        assert refused.value.code == 403 and "API key not valid" in str(refused.value)
        assert "API key not valid" in captured_logs()
        assert sent_with_bad_key <= 8, "at most max_concurrency calls go out with a refused key"
        assert _lines(tmp_path, "failed*.jsonl") == [], "no row is a dead letter for the key"

        set_connection(host=emulator.base_url, password=API_KEY)
        summary = _operator(tmp_path).execute(context={})
    assert summary["succeeded"] == 300 and summary["failed"] == 0
    assert sorted(r["key"] for r in _lines(tmp_path, "results-*.jsonl")) == [row["id"] for row in ROWS]


def test_an_unknown_model_stops_the_run(connection, tmp_path):
    with pytest.raises(FlexRequestError, match="404"):
        _operator(tmp_path, model="gemini-0.1-nonexistent").execute(context={})
    assert connection.admin.stats()["api_requests"] <= 8
    assert _lines(tmp_path, "failed*.jsonl") == []


def test_a_400_every_row_gets_stops_the_run_but_a_row_of_its_own_is_a_dead_letter(connection, tmp_path):
    connection.admin.inject("invalid_argument", count=1000)
    with pytest.raises(FlexRequestError, match="400"):
        _operator(tmp_path, max_concurrency=2).execute(context={})
    assert connection.admin.stats()["api_requests"] <= RUN_WIDE_400_ROWS + 2
    assert _lines(tmp_path, "failed*.jsonl") == []
    connection.admin.clear_faults()

    rows = [dict(row) for row in ROWS[:20]]
    rows[5]["text"] += " [emulator:block]"  # one row's own problem, after others succeeded
    connection.admin.inject("invalid_argument", count=1)
    summary = _operator(tmp_path / "second", records=rows, max_failed_fraction=0.2, max_concurrency=1).execute(
        context={}
    )
    assert summary["failed"] == 2 and summary["succeeded"] == 18
