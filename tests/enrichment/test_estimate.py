"""A cost estimate before spending: countTokens on a sample, no generate call; a cap the estimate exceeds stops first."""

from __future__ import annotations

import pytest

from airflow_provider_flex.enrichment.estimate import DEFAULT_OUTPUT_TOKENS, output_tokens_per_row, sample_positions
from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
from airflow_provider_flex.pricing import token_cost

ROWS = [{"id": f"r{i}", "text": "word " * (5 + i % 7)} for i in range(200)]


def _operator(tmp_path, **kwargs) -> GeminiFlexEnrichOperator:
    return GeminiFlexEnrichOperator(
        task_id="enrich",
        records=ROWS,
        key_field="id",
        prompt_template="Summarise: {{ row.text }}",
        output_path=str(tmp_path),
        model="gemini-2.5-flash",
        **kwargs,
    )


def test_estimate_only_counts_a_sample_and_calls_nothing_else(connection, tmp_path):
    result = _operator(tmp_path, estimate_only=True, estimated_output_tokens=100).execute(context={})
    stats = connection.admin.stats()
    estimate = result["estimate"]
    assert stats["requests"] == 0, "no generate call"
    assert stats["api_requests"] == estimate["sampled_rows"] == 20
    assert estimate["rows"] == 200 and 5 < estimate["input_tokens_per_row"] < 20
    tokens_in = round(estimate["input_tokens_per_row"] * 200)
    expected = token_cost(tokens_in, 100 * 200, model="gemini-2.5-flash", tier="flex")
    assert estimate["cost_usd"] == pytest.approx(expected, abs=2e-6)
    assert estimate["standard_cost_usd"] == pytest.approx(2 * expected, abs=4e-6)
    assert not list(tmp_path.glob("results-*.jsonl"))


def test_a_cap_below_the_estimate_fails_before_the_first_call(connection, tmp_path):
    with pytest.raises(FlexError, match=r"estimated cost .* exceeds max_cost_usd=\$0\.001"):
        _operator(tmp_path, max_cost_usd=0.001).execute(context={})
    assert connection.admin.stats()["requests"] == 0


def test_the_output_assumption_and_the_sample():
    assert output_tokens_per_row(50, {"max_output_tokens": 10}) == 50
    assert output_tokens_per_row(None, {"max_output_tokens": 10}) == 10
    assert output_tokens_per_row(None, None) == DEFAULT_OUTPUT_TOKENS
    assert sample_positions(5) == {0, 1, 2, 3, 4}
    spread = sample_positions(1000)
    assert len(spread) == 20 and {0, 999} <= spread
