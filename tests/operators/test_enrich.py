"""GeminiFlexEnrichOperator against the emulator: shedding, 429s, crashes, dead letters, cost caps, bad input."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import jsonschema
import pytest

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.enrichment.records import EnrichInputError
from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
from tests.hooks.conftest import API_KEY

PATIENT = FlexRetryPolicy(max_attempts=30, initial_delay=0.05, max_delay=0.5, jitter=0.5, deadline=120)
TEMPLATE = "Categorise product {{ row.id }}: {{ row.title }}"
SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["garden", "kitchen", "toys"]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["category", "tags"],
}


def _rows(n: int) -> list[dict]:
    return [{"id": f"p{i:05d}", "title": f"product number {i}"} for i in range(n)]


def _operator(output: Path, **kwargs) -> GeminiFlexEnrichOperator:
    kwargs.setdefault("records", _rows(20))
    kwargs.setdefault("retry_policy", PATIENT)
    return GeminiFlexEnrichOperator(
        task_id="enrich", key_field="id", prompt_template=TEMPLATE, output_path=str(output), **kwargs
    )


def _results(output: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(output.glob("results-*.jsonl")) for line in f.read_text().splitlines()]


def _failed(output: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(output.glob("failed*.jsonl")) for line in f.read_text().splitlines()]


def _ok_prompts(emulator: FlexEmulator) -> list[str]:
    return [c["prompt"] for c in emulator.admin.calls() if c["outcome"] == "ok"]


def test_every_row_accounted_for_once_under_shedding_and_rate_limits(set_connection, tmp_path):
    with FlexEmulator(slots=4, service_time=(0.02, 0.05), queue_depth=4, rps=60, preempt_rate=0.2, seed=5) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        summary = _operator(tmp_path, records=_rows(300), max_concurrency=16).execute(context={})
        stats = emulator.admin.stats()
    keys = [row["key"] for row in _results(tmp_path)]
    assert sorted(keys) == [row["id"] for row in _rows(300)]
    assert (summary["succeeded"], summary["failed"], summary["skipped"]) == (300, 0, 0)
    assert summary["rate_limited_429"] + summary["unavailable_503"] > 0
    assert set(stats["calls_by_tier"]) == {"flex"}
    assert stats["peak_in_flight"] <= 16
    assert stats["calls"]["flex"]["ok"] == 300
    assert all(row["service_tier"] == "flex" and row["usage"]["output_tokens"] > 0 for row in _results(tmp_path))


def test_rerun_skips_rows_that_have_results(connection, tmp_path):
    first = _operator(tmp_path).execute(context={})
    second = _operator(tmp_path).execute(context={})
    assert (first["succeeded"], second["succeeded"], second["skipped"]) == (20, 0, 20)
    assert connection.admin.stats()["requests"] == 20
    assert len(_results(tmp_path)) == 20


def test_dead_letters_and_max_failed_fraction(connection, tmp_path):
    records = _rows(20)
    for row in records[:3]:
        row["title"] += " [emulator:block]"
    with pytest.raises(FlexError, match="3 of 20 rows failed"):
        _operator(tmp_path, records=records).execute(context={})
    assert sorted(row["key"] for row in _failed(tmp_path)) == ["p00000", "p00001", "p00002"]
    assert all("blocked" in row["error"] for row in _failed(tmp_path))
    assert len(_results(tmp_path)) == 17

    summary = _operator(tmp_path, records=records, max_failed_fraction=0.2).execute(context={})
    assert (summary["skipped"], summary["failed"]) == (17, 3)
    assert len(list(tmp_path.glob("failed*.jsonl"))) == 1, "a rerun replaces the dead letters it retried"
    assert len(_failed(tmp_path)) == 3


def test_cost_cap_stops_and_resumes_after_raising_it(connection, tmp_path):
    with pytest.raises(FlexError, match="Stopped at the cost cap"):
        _operator(
            tmp_path, records=_rows(40), max_cost_usd=0.0005, max_concurrency=1, estimated_output_tokens=1
        ).execute(context={})
    done_first = len(_results(tmp_path))
    assert 0 < done_first < 40
    summary = _operator(tmp_path, records=_rows(40), max_cost_usd=1.0).execute(context={})
    assert summary["skipped"] == done_first and summary["succeeded"] == 40 - done_first
    assert connection.admin.stats()["requests"] == 40


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_file_input_with_schema_output(connection, tmp_path, fmt):
    source = tmp_path / f"products.{fmt}"
    rows = _rows(12)
    if fmt == "csv":
        with source.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["id", "title"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = tmp_path / "out"
    summary = _operator(output, records=None, input_path=str(source), response_schema=SCHEMA).execute(context={})
    assert summary["succeeded"] == 12
    for row in _results(output):
        jsonschema.validate(row["parsed"], SCHEMA)


@pytest.mark.parametrize(
    ("records", "template", "message"),
    [
        ([{"id": "a", "title": "x"}, {"id": "a", "title": "y"}], TEMPLATE, "duplicate key 'a' in rows 1 and 2"),
        ([{"id": "a", "title": "x"}, {"title": "y"}], TEMPLATE, "row 2 has no value for key_field 'id'"),
        ([{"id": "a", "title": "x"}], "Describe {{ row.colour }}", "prompt_template fails on row 1 (key 'a')"),
        (
            [{"id": "a", "title": "x"}, {"id": "b", "title": "y"}, {"id": "c"}],
            TEMPLATE,
            "prompt_template fails on row 3 (key 'c'): 'dict object' has no attribute 'title'",
        ),
        ([{"id": "a", "title": "x"}, {"id": "b", "title": " "}], "{{ row.title }}", "empty prompt for row 2 (key 'b')"),
        ([{"id": "a", "title": "x"}], "Describe {{ row.title ", "not a valid template"),
        (["not a dict"], TEMPLATE, "records[0] is a str, not a dict"),
    ],
)
def test_bad_records_fail_before_any_call(connection, tmp_path, records, template, message):
    operator = GeminiFlexEnrichOperator(
        task_id="enrich", records=records, key_field="id", prompt_template=template, output_path=str(tmp_path),
        on_duplicate_key="fail", on_bad_row="fail",
    )  # fmt: skip
    with pytest.raises(EnrichInputError, match=re.escape(message)):
        operator.execute(context={})
    assert connection.admin.stats()["api_requests"] == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("rows.jsonl", '{"id": "a", "title": "x"}\n{"id": "b", "title": \n', "rows.jsonl line 2: not valid JSON"),
        ("rows.jsonl", '{"id": "a", "title": "x"}\n[1, 2]\n', "line 2: expected a JSON object"),
        ("rows.csv", "id,title\na,x\nb,y,extra\n", "row 2 (line 3): expected 2 fields"),
        ("rows.txt", "whatever", "expected a .jsonl, .ndjson, .csv or .parquet file"),
        ("missing.jsonl", None, "cannot read input_path"),
    ],
)
def test_bad_files_fail_before_any_call(connection, tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    operator = GeminiFlexEnrichOperator(
        task_id="enrich",
        input_path=str(path),
        key_field="id",
        prompt_template=TEMPLATE,
        output_path=str(tmp_path / "o"),
    )
    with pytest.raises(EnrichInputError, match=re.escape(message)):
        operator.execute(context={})
    assert connection.admin.stats()["api_requests"] == 0


def test_prompt_template_survives_airflow_rendering_in_a_dag_run(connection, run_dag_file, tmp_path):
    import uuid

    dag_id = f"enrich_{uuid.uuid4().hex[:8]}"
    output = tmp_path / "enriched"
    source = f"""
        from airflow.sdk import DAG, task
        from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

        with DAG({dag_id!r}, schedule=None, params={{"shop": "Garden Hut"}}):
            @task
            def extract() -> list[dict]:
                return [{{"id": "a1", "title": "rake"}}, {{"id": "a2", "title": "hose"}}]

            GeminiFlexEnrichOperator(
                task_id="enrich",
                records=extract(),
                key_field="id",
                prompt_template="For {{{{ params.shop }}}} ({{{{ dag.dag_id }}}}), categorise: {{{{ row.title }}}}",
                output_path={str(output)!r} + "/{{{{ dag.dag_id }}}}",
            )
    """
    dag_run = run_dag_file(source, dag_id)
    assert dag_run.state == "success"
    assert sorted(r["key"] for r in _results(output / dag_id)) == ["a1", "a2"]
    prompts = sorted(c["prompt"] for c in connection.admin.calls())
    assert prompts == [
        "For Garden Hut (" + dag_id + "), categorise: hose",
        "For Garden Hut (" + dag_id + "), categorise: rake",
    ]
