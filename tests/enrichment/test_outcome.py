"""What a task does with a finished run's summary: a pure decision, tested without Airflow or the API."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_flex.enrichment.failures import DeadLetters
from airflow_provider_flex.enrichment.outcome import (
    DEFER_FOR_BATCHES,
    FAIL,
    FINISH,
    WAIT_FOR_QUOTA_RESET,
    next_step,
)
from airflow_provider_flex.enrichment.records import EnrichInputError, PromptTemplate
from airflow_provider_flex.enrichment.request import EnrichRequest, find_rows_to_do
from airflow_provider_flex.enrichment.store import OutputTotals
from airflow_provider_flex.enrichment.summary import BatchJobsSeen, CallCounts, EnrichStats
from airflow_provider_flex.exceptions import FlexError, FlexQuotaExhausted, FlexRequestError

RESET = datetime(2026, 12, 3, 8, 0, tzinfo=timezone.utc)


def _request(**overrides) -> EnrichRequest:
    arguments = {
        "task": "Task 'enrich'",
        "key_field": "id",
        "template": PromptTemplate("Say {{ row.text }}"),
        "output_path": "/tmp/out",
        "records": [{"id": str(i), "text": f"row {i}"} for i in range(10)],
    }
    return EnrichRequest(**{**arguments, **overrides})


def _summary(request: EnrichRequest, **stats_fields):
    stats = EnrichStats(total=10, **stats_fields)
    return stats.summary(request, CallCounts(), dead_letters=DeadLetters(), earlier=OutputTotals())


def _exhausted() -> FlexQuotaExhausted:
    return FlexQuotaExhausted(
        model="gemini-2.5-flash", quota_id="GenerateRequestsPerDayPerProjectPerModel", quota="requests per day",
        limit=250, reset_at=RESET, attempts=1, waited_s=0.1,
    )  # fmt: skip


def test_a_run_with_every_row_answered_finishes_and_logs_its_summary():
    request = _request()
    stats = EnrichStats(total=10)
    stats.flex.rows = 10
    summary = stats.summary(request, CallCounts(), dead_letters=DeadLetters(), earlier=OutputTotals(rows=3))
    step = next_step(summary, request)
    assert step.action == FINISH and step.error is None
    assert [level for level, _ in step.log_lines] == [logging.INFO]
    assert "10 rows answered" in step.log_lines[0][1]
    assert summary.output_rows == 13 and summary.route == "flex" and summary.output_path == "/tmp/out"


def test_too_many_dead_letters_fail_after_the_summary_and_record_the_spend():
    request = _request(max_failed_fraction=0.1)
    step = next_step(_summary(request, failed=5), request)
    assert step.action == FAIL and step.record_spend
    assert isinstance(step.error, FlexError) and "5 of 10 rows failed" in str(step.error)


def test_a_refused_run_fails_with_the_apis_own_error_and_no_summary_line():
    request = _request()
    refusal = FlexRequestError(400, "INVALID_ARGUMENT", "API key not valid")
    step = next_step(_summary(request, run_refused=refusal), request)
    assert step.action == FAIL and step.error is refusal
    assert [level for level, _ in step.log_lines] == [logging.ERROR]


def test_a_gone_supervisor_fails_without_pushing_spend():
    request = _request()
    step = next_step(_summary(request, orphaned=True), request)
    assert step.action == FAIL and not step.record_spend and "supervisor went away" in str(step.error)


@pytest.mark.parametrize(("on_daily_quota", "action"), [("fail", FAIL), ("wait", WAIT_FOR_QUOTA_RESET)])
def test_a_spent_day_on_flex_fails_or_waits_for_the_reset(on_daily_quota, action):
    request = _request(on_daily_quota=on_daily_quota)
    exhausted = _exhausted()
    step = next_step(_summary(request, quota_exhausted=exhausted), request)
    assert step.action == action
    assert step.log_lines[-1][0] == logging.WARNING
    if action == FAIL:
        assert step.error is exhausted
    else:
        assert step.reset_at == RESET


def test_rows_in_batch_jobs_defer_before_anything_else_is_decided():
    request = _request(route="auto", deadline=RESET + timedelta(hours=1))
    stats = EnrichStats(total=10, failed=9, in_batch=1)
    jobs = BatchJobsSeen(waiting=["batches/1"])
    summary = stats.summary(request, CallCounts(), dead_letters=DeadLetters(), earlier=OutputTotals(), jobs=jobs)
    step = next_step(summary, request)
    assert step.action == DEFER_FOR_BATCHES and "batches/1" in step.log_lines[0][1]
    assert summary.finish_by == (RESET + timedelta(hours=1)).isoformat()
    assert "waiting_jobs" not in summary.to_dict() and "run_refused" not in summary.to_dict()
    assert "cutoff" not in summary.to_dict()


def test_one_pass_checks_every_row_and_finds_the_rows_still_to_do():
    request = _request(route="auto")
    found = find_rows_to_do(request, {"1", "3"}, keep_positions=True)
    assert (found.total, found.todo) == (10, 8)
    assert found.positions == [0, 2, 4, 5, 6, 7, 8, 9] and found.keys[:2] == ["0", "2"]
    found.without({"0", "9"})
    assert found.positions == [2, 4, 5, 6, 7, 8] and found.keys == ["2", "4", "5", "6", "7", "8"]
    assert find_rows_to_do(request, set(), keep_positions=False).positions == []  # flex keeps no positions
    doubled = _request(records=[{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], on_duplicate_key="fail")
    with pytest.raises(EnrichInputError, match="duplicate key 'a' in rows 1 and 2"):
        find_rows_to_do(doubled, set(), keep_positions=False)
