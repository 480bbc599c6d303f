"""Load: 2,000 rows through the enrich operator while the emulator sheds half the flex calls
and admits 10 calls a second. Every row ends exactly once, no call leaves the flex tier,
calls in flight never pass the cap, and reruns finish the dead letters without paying
for any row twice. About eight minutes here (the rate limit makes it so).
"""

from __future__ import annotations

import json

import pytest

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

ROWS = 2000
CAP = 16
RPS = 10
# the default policy's shape, on a shorter clock: 10 attempts, exponential backoff, a deadline
POLICY = FlexRetryPolicy(max_attempts=10, initial_delay=0.5, max_delay=10, deadline=600)

pytestmark = pytest.mark.slow


def _lines(paths) -> list[dict]:
    return [json.loads(line) for path in sorted(paths) for line in path.read_text().splitlines()]


def test_2000_rows_under_50_percent_shedding_and_a_rate_limit(set_connection, tmp_path):
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i:05d}", "text": f"row {i} text"}) + "\n" for i in range(ROWS)))
    output = tmp_path / "out"
    expected = {f"r{i:05d}" for i in range(ROWS)}

    def enrich() -> dict:
        return GeminiFlexEnrichOperator(
            task_id="enrich",
            input_path=str(source),
            key_field="id",
            prompt_template="Tag this: {{ row.text }}",
            output_path=str(output),
            max_concurrency=CAP,
            retry_policy=POLICY,
            max_failed_fraction=0.2,
        ).execute(context={})

    with FlexEmulator(slots=8, service_time=(0.05, 0.2), rps=RPS, preempt_rate=0.5, seed=2) as emulator:
        set_connection(host=emulator.base_url, password="load-key")
        first = enrich()
        first_stats = emulator.admin.stats()
        results = _lines(output.glob("results-*.jsonl"))
        failed = _lines(output.glob("failed-*.jsonl"))

        # every row exactly once: a result or a dead letter
        result_keys = [row["key"] for row in results]
        failed_keys = [row["key"] for row in failed]
        assert len(result_keys) == len(set(result_keys)) and len(failed_keys) == len(set(failed_keys))
        assert set(result_keys) | set(failed_keys) == expected and not set(result_keys) & set(failed_keys)
        assert (first["succeeded"], first["failed"]) == (len(results), len(failed))
        # every answered (billed) call became a result; nothing paid for was dropped
        assert first_stats["calls"]["flex"]["ok"] == len(results)
        assert first_stats["calls"]["flex"]["preempted"] > ROWS * 0.5
        assert first_stats["calls"]["flex"].get("rate_limited", 0) > 0
        # the shedding storm was survived on flex alone, within the cap
        assert set(first_stats["calls_by_tier"]) == {"flex"} and first["standard_tier_calls"] == 0
        assert first_stats["peak_in_flight"] <= CAP and first["peak_concurrency"] <= CAP
        assert all(row["service_tier"] == "flex" for row in results)

        # reruns (Airflow task retries) retry only the dead letters and pay for no row twice
        reruns = []
        while not reruns or (reruns[-1]["failed"] and len(reruns) < 5):
            reruns.append(enrich())
        total_stats = emulator.admin.stats()
    final = _lines(output.glob("results-*.jsonl"))
    assert (reruns[0]["skipped"], reruns[0]["succeeded"] + reruns[0]["failed"]) == (len(results), len(failed))
    assert reruns[-1]["failed"] == 0 and _lines(output.glob("failed-*.jsonl")) == []
    assert sorted(row["key"] for row in final) == sorted(expected)
    assert total_stats["calls"]["flex"]["ok"] == ROWS
    assert set(total_stats["calls_by_tier"]) == {"flex"} and total_stats["peak_in_flight"] <= CAP
