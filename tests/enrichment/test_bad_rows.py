"""Rows a user would set aside, not a failed run: repeated keys (``on_duplicate_key``) and rows whose prompt
does not render (``on_bad_row``), decided in the one checking pass before any call."""

from __future__ import annotations

import json

import pytest

from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

POLICY = FlexRetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=0.2, jitter=0.0, deadline=60)
ROWS = [
    {"id": "a", "title": "kettle"},
    {"id": "b", "title": "rake"},
    {"id": "a", "title": "another kettle"},  # the key of row 1 again
    {"id": "c", "title": " "},  # an empty prompt
    {"id": "d"},  # no title: the template does not render
    {"id": "e", "title": "hose"},
]


def _run(tmp_path, **kwargs) -> dict:
    return GeminiFlexEnrichOperator(
        task_id="enrich", records=ROWS, key_field="id", prompt_template="{{ row.title }}",
        output_path=str(tmp_path / "out"), retry_policy=POLICY, **kwargs,
    ).execute(context={})  # fmt: skip


def _lines(tmp_path, prefix: str) -> list[dict]:
    files = sorted((tmp_path / "out").glob(f"{prefix}-*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def test_by_default_a_repeated_key_keeps_its_first_row_and_bad_rows_are_dead_letters(connection, tmp_path):
    summary = _run(tmp_path, max_failed_fraction=0.5)
    assert (summary["succeeded"], summary["failed"], summary["total"]) == (3, 2, 5)
    assert sorted(r["key"] for r in _lines(tmp_path, "results")) == ["a", "b", "e"]
    letters = {letter["key"]: letter for letter in _lines(tmp_path, "failed")}
    assert set(letters) == {"c", "d"} and letters["c"]["row"] == 4 and "empty prompt" in letters["c"]["error"]
    assert "has no attribute 'title'" in letters["d"]["error"] and letters["d"]["error_type"] == "BadRow"
    prompts = [call["prompt"] for call in connection.admin.calls()]
    assert sorted(prompts) == ["hose", "kettle", "rake"], "no call for a row set aside, the first 'a' kept"


def test_dead_letters_fail_the_task_after_everything_is_written_unless_allowed(connection, tmp_path):
    with pytest.raises(FlexError, match="2 of 5 rows failed"):
        _run(tmp_path)
    assert sorted(r["key"] for r in _lines(tmp_path, "results")) == ["a", "b", "e"], "the good rows were enriched"


def test_a_repeated_key_may_be_a_dead_letter_or_fail_the_run(connection, tmp_path):
    summary = _run(tmp_path, on_duplicate_key="dead_letter", on_bad_row="dead_letter", max_failed_fraction=1.0)
    duplicate = [letter for letter in _lines(tmp_path, "failed") if letter["error_type"] == "DuplicateKey"]
    assert summary["failed"] == 3 and duplicate[0]["row"] == 3 and "rows 1 and 3" in duplicate[0]["error"]
    requests = connection.admin.stats()["requests"]
    with pytest.raises(ValueError, match="duplicate key 'a' in rows 1 and 3"):
        _run(tmp_path / "strict", on_duplicate_key="fail")
    with pytest.raises(ValueError, match="must be one of"):
        _run(tmp_path, on_bad_row="skip")
    assert connection.admin.stats()["requests"] == requests, "the strict run failed before any call"
