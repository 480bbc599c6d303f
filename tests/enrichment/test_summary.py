"""The enrichment's summary (its XCom) tells what the run cost against standard, and what the output holds."""

from __future__ import annotations

import inspect
import json
from dataclasses import fields
from pathlib import Path

import pytest

from airflow_provider_flex.enrichment.summary import EnrichSummary, TokenTotals, error_digest
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
from airflow_provider_flex.pricing import token_cost

POLICY = FlexRetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=0.2, jitter=0.0, deadline=60)
MODEL = "gemini-2.5-flash"


def _operator(output: Path, records: list[dict], **kwargs) -> GeminiFlexEnrichOperator:
    return GeminiFlexEnrichOperator(
        task_id="enrich",
        records=records,
        key_field="id",
        prompt_template="Summarise {{ row.text }}",
        output_path=str(output),
        model=MODEL,
        retry_policy=POLICY,
        **kwargs,
    )


def test_the_summary_counts_tokens_and_prices_them_at_flex_and_standard(connection, tmp_path):
    records = [{"id": f"r{i}", "text": f"note {i}"} for i in range(12)]
    records[3]["text"] += " [emulator:block]"
    summary = _operator(tmp_path, records, max_failed_fraction=0.5).execute(context={})
    results = [json.loads(line) for f in tmp_path.glob("results-*.jsonl") for line in f.read_text().splitlines()]
    letters = [json.loads(line) for f in tmp_path.glob("failed-*.jsonl") for line in f.read_text().splitlines()]
    # the blocked row's prompt was billed too: it counts, and its dead letter says what it cost
    assert [letter["error_kind"] for letter in letters] == ["blocked"] and letters[0]["usage"]["prompt_tokens"] > 0
    usage = [r["usage"] for r in results] + [letter["usage"] for letter in letters]
    assert summary["unusable_answers"] == 1 and letters[0]["cost_usd"] > 0
    assert summary["unusable_cost_usd"] == pytest.approx(letters[0]["cost_usd"], abs=1e-6)
    assert summary["model"] == MODEL
    assert summary["input_tokens"] == sum(u["prompt_tokens"] for u in usage) > 0
    assert summary["thinking_tokens"] == sum(u["thoughts_tokens"] for u in usage) > 0
    assert summary["output_tokens"] == sum(u["output_tokens"] + u["thoughts_tokens"] for u in usage)
    standard = token_cost(summary["input_tokens"], summary["output_tokens"], model=MODEL, tier="standard")
    assert summary["standard_cost_usd"] == pytest.approx(standard, abs=1e-6)
    assert summary["cost_usd"] == pytest.approx(standard / 2, abs=1e-6)
    assert summary["saved_usd"] == pytest.approx(standard / 2, abs=1e-6)
    assert summary["top_errors"] == [{"reason": summary["top_errors"][0]["reason"], "rows": 1}]
    assert "blocked" in summary["top_errors"][0]["reason"] and summary["failed_keys_sample"] == ["r3"]
    json.dumps(summary)  # plain JSON for XCom

    rerun = _operator(tmp_path, records, max_failed_fraction=0.5).execute(context={})
    # only the dead letter is tried again (and paid again); the answers in the output are not
    assert rerun["cost_usd"] == pytest.approx(summary["unusable_cost_usd"], abs=1e-6) and rerun["skipped"] == 11
    answers_cost = summary["cost_usd"] - summary["unusable_cost_usd"]
    assert rerun["output_rows"] == 11 and rerun["output_cost_usd"] == pytest.approx(answers_cost, abs=1e-6)
    assert summary["output_cost_usd"] == pytest.approx(answers_cost, abs=1e-6)
    assert rerun["output_standard_cost_usd"] == pytest.approx(summary["output_standard_cost_usd"], rel=1e-6)


def test_every_summary_key_is_a_documented_field():
    """Each field of the XCom's summary has a ``#:`` comment above it (or above the group it is declared in)."""
    lines = inspect.getsource(EnrichSummary).splitlines()
    declared = {
        line.split(":")[0].strip(): n for n, line in enumerate(lines) if line.startswith("    ") and ": " in line
    }
    for field in fields(EnrichSummary):
        n = declared[field.name]
        while lines[n - 1].strip() and not lines[n - 1].strip().startswith(("#:", '"""')):
            n -= 1
        assert lines[n - 1].strip().startswith("#:"), f"EnrichSummary.{field.name} has no #: comment"
    assert set(TokenTotals.__dataclass_fields__) == {
        "input_tokens",
        "output_tokens",
        "thinking_tokens",
        "cached_tokens",
    }


def test_error_digest_orders_reasons_and_samples_keys():
    letters = [{"key": f"k{i}", "error": "boom" if i % 3 else "bust"} for i in range(30)]
    top, sample = error_digest(letters)
    assert top == [{"reason": "boom", "rows": 20}, {"reason": "bust", "rows": 10}]
    assert sample == [f"k{i}" for i in range(10)]
