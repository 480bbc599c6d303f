"""The spend figures and the page, as pure functions of the provider tasks' XCom values."""

from __future__ import annotations

from airflow_provider_flex.plugins.spend_page import chart_bars, render_spend_page
from airflow_provider_flex.spend import TaskRecord, runs_spend, spend_by_day, spend_of

CALL = {
    "text": "ok",
    "model": "gemini-2.5-flash",
    "service_tier": "flex",
    "usage": {"prompt_tokens": 10, "output_tokens": 5, "thoughts_tokens": 3, "cached_tokens": 2},
    "cost_usd": 0.001,
    "standard_cost_usd": 0.002,
    "rate_limited_429": 1,
    "unavailable_503": 2,
}
ENRICH = {
    "succeeded": 4,
    "rows_by_route": {"flex": 3, "batch": 1},
    "standard_tier_calls": 1,
    "tokens": {"input_tokens": 40, "output_tokens": 20, "thinking_tokens": 5, "cached_tokens": 0},
    "cost_usd": 0.01,
    "standard_cost_usd": 0.02,
    "rate_limited_429": 3,
    "unavailable_503": 0,
}


def record(run_id: str, task_id: str, value, key: str = "return_value", start: str = "2026-11-28T10:00:00+00:00"):
    return TaskRecord("dag", run_id, "success", start, task_id, -1, key, value)


def test_a_call_and_an_enrichment_read_as_spend():
    call, enrich = spend_of(CALL), spend_of(ENRICH)
    assert (call.calls, call.input_tokens, call.output_tokens, call.tiers) == (1, 10, 8, {"flex": 1})
    assert (call.rate_limited_429, call.unavailable_503) == (1, 2)
    assert (enrich.rows, enrich.tiers) == (4, {"flex": 2, "standard": 1, "batch": 1})
    assert spend_of({"cost_usd": 1.0}) is None  # a downstream report's dict is not a provider result
    assert spend_of("text") is None


def test_runs_count_each_task_once_and_prefer_its_return_value():
    runs = runs_spend(
        [
            record("r1", "judge", CALL),
            record("r1", "enrich", ENRICH, key="gemini_flex_spend"),
            record("r1", "enrich", ENRICH),  # the same task's result wins over what it recorded earlier
            record("r2", "judge", CALL, start="2026-11-29T10:00:00+00:00"),
        ]
    )
    assert [run["run_id"] for run in runs] == ["r2", "r1"]  # newest first
    first = runs[1]
    assert first["tasks"] == 2
    assert first["cost_usd"] == 0.011 and first["standard_cost_usd"] == 0.022 and first["saved_usd"] == 0.011
    days = spend_by_day(runs)
    assert [day["day"] for day in days] == ["2026-11-28", "2026-11-29"]
    assert days[0]["cost_usd"] == 0.011


def test_the_page_draws_a_bar_per_day_and_escapes_what_it_shows():
    runs = runs_spend([record("<script>alert(1)</script>", "judge", CALL)])
    page = render_spend_page(runs, spend_by_day(runs))
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    bars = chart_bars(spend_by_day(runs))
    assert bars[0]["standard_h"] == 160 and bars[0]["cost_h"] == 80  # half of standard, drawn at half height
    assert 'class="flex"' in page and "0.001000" in page
    assert "No DAG run" in render_spend_page([], [])


def test_calls_count_api_requests_and_batch_jobs_and_spend_splits_by_route_and_tier():
    call = spend_of({**CALL, "attempts": 3, "cache_saved_usd": 0.0004})
    assert call.calls == 3 and call.cost_by_route == {"flex": 0.001} and call.cost_by_tier == {"flex": 0.001}
    assert call.cache_saved_usd == 0.0004
    enrich = spend_of(
        {
            **ENRICH,
            "api_requests": 9,
            "batch_jobs": [{"name": "batches/1", "state": "succeeded"}],
            "cost_by_route": {"flex": 0.008, "batch": 0.0019},
            "cost_by_tier": {"flex": 0.006, "standard": 0.002, "batch": 0.0019},
            "cache_storage_usd": 0.0001,
            "cache_saved_usd": 0.003,
        }
    )
    assert enrich.calls == 10 and enrich.batch_jobs == 1, "9 requests and 1 batch job, not 4 rows"
    assert enrich.cost_by_route == {"flex": 0.0081, "batch": 0.0019}, "the cache's storage is flex's"
    assert enrich.cost_by_tier["standard"] == 0.002 and enrich.cache_storage_usd == 0.0001
    older = spend_of(ENRICH)  # a summary from before api_requests: one request per answer
    assert older.calls == 4
    batch = spend_of({"kind": "llm_batch", "batch_jobs": 1, "rows": 6, "cost_usd": 0.003, "standard_cost_usd": 0.006,
                      "input_tokens": 60, "output_tokens": 30, "cached_tokens": 0})  # fmt: skip
    assert (batch.calls, batch.rows, batch.cost_by_route, batch.tiers) == (1, 6, {"batch": 0.003}, {"batch": 6})


def test_a_run_that_failed_before_its_first_call_is_listed_at_zero():
    runs = runs_spend(
        [record("r1", "enrich", None, key=None), record("r2", "judge", CALL), record("r2", "report", {"x": 1})]
    )
    failed = next(run for run in runs if run["run_id"] == "r1")
    assert failed["cost_usd"] == 0.0 and failed["tasks"] == 1 and failed["calls"] == 0
    page = render_spend_page(runs, spend_by_day(runs))
    assert 'data-run-id="r1"' in page and "flex 0.001000" in page


def test_a_batch_task_counts_with_what_the_adapter_recorded():
    manifest = {"schema_version": 1, "batch_id": "batches/1", "counts": {"succeeded": 6}}
    spend = {"kind": "llm_batch", "batch_jobs": 1, "rows": 6, "cost_usd": 0.003, "standard_cost_usd": 0.006}
    runs = runs_spend([record("r1", "classify", manifest), record("r1", "classify", spend, key="gemini_flex_spend")])
    assert runs[0]["cost_usd"] == 0.003 and runs[0]["tasks"] == 1 and runs[0]["calls"] == 1


def test_a_runs_batch_jobs_show_their_state_and_the_apis_counts():
    jobs = [
        {"name": "batches/a", "state": "succeeded", "successful": 5, "failed": 1, "pending": 0},
        {"name": "batches/b", "state": "cancelled"},
    ]
    runs = runs_spend([record("r1", "enrich", {**ENRICH, "batch_jobs": jobs})])
    assert runs[0]["jobs"] == jobs and runs[0]["batch_jobs"] == 2
    page = render_spend_page(runs, spend_by_day(runs))
    assert "succeeded 5/1/0" in page and 'class="job cancelled"' in page
