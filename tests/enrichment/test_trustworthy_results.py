"""Results an evaluation can trust: answers checked against the schema on the client, every paid answer
counted, a rerun that notices a changed request, a pydantic class as ``response_schema`` everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, Field, TypeAdapter

from airflow_provider_flex.exceptions import FlexError, FlexResponseError
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.hooks.schema import AnswerSchema, json_path
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator, GeminiFlexGenerateContentOperator

POLICY = FlexRetryPolicy(max_attempts=2, initial_delay=0.05, max_delay=0.1, jitter=0.0, deadline=60)
VERDICT = {
    "type": "object",
    "properties": {"reason": {"type": "string", "pattern": "^(Correct|Incorrect): "}, "score": {"type": "integer"}},
    "required": ["reason", "score"],
}


class Verdict(BaseModel):
    reason: str = Field(pattern="^(Correct|Incorrect): ")
    score: int


class Tags(BaseModel):
    category: str
    score: int


def _rows(count: int) -> list[dict]:
    return [{"id": f"q{i}", "question": f"question {i}"} for i in range(count)]


def _enrich(output: Path, **kwargs) -> GeminiFlexEnrichOperator:
    settings = {
        "task_id": "judge",
        "records": _rows(6),
        "key_field": "id",
        "prompt_template": "Judge {{ row.question }}",
        "output_path": str(output),
        "model": "gemini-2.5-flash",
        "retry_policy": POLICY,
        **kwargs,
    }
    return GeminiFlexEnrichOperator(**settings)


def _lines(folder: Path, pattern: str) -> list[dict]:
    return [json.loads(line) for f in folder.glob(pattern) for line in f.read_text().splitlines() if line.strip()]


# ---- the checks themselves (pure)


def test_a_json_schema_break_names_the_path_and_the_rule():
    schema = AnswerSchema(json_schema=VERDICT)
    assert schema.parse('{"reason": "Correct: yes", "score": 3}', "STOP") == {"reason": "Correct: yes", "score": 3}
    with pytest.raises(FlexResponseError) as off:
        schema.parse('{"reason": "maybe", "score": 3}', "STOP")
    assert off.value.reason == "off_schema" and off.value.message == "$.reason: does not match '^(Correct|Incorrect): '"
    with pytest.raises(FlexResponseError, match=r"\$: 'score' is a required property"):
        schema.parse('{"reason": "Correct: yes"}', "STOP")
    nested = AnswerSchema(
        json_schema={"type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer"}}}}
    )
    with pytest.raises(FlexResponseError, match=r"\$\[1\]\.n: is not of type 'integer'"):
        nested.parse('[{"n": 1}, {"n": "two"}]', "STOP")


def test_invalid_json_and_a_cut_answer_are_told_apart():
    schema = AnswerSchema(json_schema=VERDICT)
    with pytest.raises(FlexResponseError) as cut:
        schema.parse('{"reason": "Corr', "MAX_TOKENS")
    assert cut.value.reason == "max_tokens" and "maxOutputTokens" in cut.value.message
    with pytest.raises(FlexResponseError) as invalid:
        schema.parse("not json", "STOP")
    assert invalid.value.reason == "invalid_json"


@pytest.mark.parametrize("pydantic_type", [Verdict, TypeAdapter(Verdict)])
def test_a_pydantic_type_is_validated_by_pydantic(pydantic_type):
    schema = AnswerSchema(pydantic_type=pydantic_type)
    assert schema.parse('{"reason": "Incorrect: no", "score": 1}', "STOP") == Verdict(reason="Incorrect: no", score=1)
    with pytest.raises(FlexResponseError) as off:
        schema.parse('{"reason": "perhaps", "score": 1}', "STOP")
    assert off.value.reason == "off_schema" and off.value.message.startswith("$.reason: String should match pattern")


def test_json_paths():
    assert json_path([]) == "$" and json_path(["items", 0, "name"]) == "$.items[0].name"


# ---- the hook and the operators


def test_the_hook_rejects_an_off_schema_answer_with_its_spend(connection):
    from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook

    config = {"response_mime_type": "application/json", "response_schema": Verdict}
    with pytest.raises(FlexResponseError) as off:
        GeminiFlexHook(retry_policy=POLICY).generate_content(
            contents="Judge this", model="gemini-2.5-flash", config=config
        )
    assert off.value.reason == "off_schema" and off.value.message.startswith("$.reason")
    assert off.value.spend["cost_usd"] > 0 and off.value.spend["usage"]["prompt_tokens"] > 0


def test_a_failed_generate_task_records_what_it_spent(connection):
    class TaskInstance:
        def __init__(self) -> None:
            self.pushed: dict = {}

        def xcom_push(self, key: str, value: object) -> None:
            self.pushed[key] = value

    ti = TaskInstance()
    task = GeminiFlexGenerateContentOperator(
        task_id="judge", contents="Judge this", model="gemini-2.5-flash", response_schema=VERDICT, retry_policy=POLICY
    )
    with pytest.raises(FlexResponseError, match="off_schema"):
        task.execute(context={"ti": ti})
    from airflow_provider_flex.spend import SPEND_XCOM_KEY, spend_of

    spend = spend_of(ti.pushed[SPEND_XCOM_KEY])
    assert spend is not None and spend.calls == 1 and spend.cost_usd > 0 and spend.input_tokens > 0


def test_a_pattern_no_answer_matches_yields_only_dead_letters_naming_it(connection, tmp_path):
    summary = _enrich(tmp_path, response_schema=VERDICT, max_failed_fraction=1.0).execute(context={})
    letters = _lines(tmp_path, "failed-*.jsonl")
    assert summary["succeeded"] == 0 and summary["failed"] == 6 and _lines(tmp_path, "results-*.jsonl") == []
    assert {letter["error_kind"] for letter in letters} == {"off_schema"}
    assert all("$.reason: does not match '^(Correct|Incorrect): '" in letter["error"] for letter in letters)
    # paid for all the same: the summary counts every one of them
    assert summary["unusable_answers"] == 6 and summary["input_tokens"] > 0 and summary["output_tokens"] > 0
    assert summary["cost_usd"] > 0
    assert summary["cost_usd"] == pytest.approx(sum(letter["cost_usd"] for letter in letters), abs=1e-5)


def test_rows_cut_at_max_output_tokens_count_their_tokens_and_cost(connection, tmp_path):
    summary = _enrich(
        tmp_path,
        response_schema={"type": "object", "properties": {"summary": {"type": "string"}}},
        generation_config={"max_output_tokens": 3},
        max_failed_fraction=1.0,
    ).execute(context={})
    letters = _lines(tmp_path, "failed-*.jsonl")
    assert summary["failed"] == 6 and {letter["error_kind"] for letter in letters} == {"max_tokens"}
    assert summary["input_tokens"] > 0 and summary["output_tokens"] >= 6 and summary["cost_usd"] > 0
    assert summary["unusable_cost_usd"] == pytest.approx(summary["cost_usd"], abs=1e-6)


# ---- a rerun notices a changed request


@pytest.mark.parametrize(
    ("change", "named"),
    [({"system_instruction": "A stricter rubric."}, "system_instruction"), ({"model": "gemini-2.5-pro"}, "model")],
)
def test_a_rerun_after_a_changed_request_refuses_before_any_call(connection, tmp_path, change, named):
    first = _enrich(tmp_path, system_instruction="The rubric.").execute(context={})
    assert first["succeeded"] == 6
    calls = connection.admin.stats()["requests"]
    with pytest.raises(FlexError, match=f"request changed .*\\({named}\\).*on_changed_request='rerun'"):
        _enrich(tmp_path, **{"system_instruction": "The rubric.", **change}).execute(context={})
    assert connection.admin.stats()["requests"] == calls  # nothing was called
    same = _enrich(tmp_path, system_instruction="The rubric.").execute(context={})
    assert same["skipped"] == 6 and connection.admin.stats()["requests"] == calls


def test_on_changed_request_rerun_answers_every_row_again_and_keeps_the_old_apart(connection, tmp_path):
    _enrich(tmp_path, model="gemini-2.5-flash").execute(context={})
    old = _lines(tmp_path, "results-*.jsonl")
    rerun = _enrich(tmp_path, model="gemini-2.5-pro", on_changed_request="rerun").execute(context={})
    assert rerun["succeeded"] == 6 and rerun["skipped"] == 0 and rerun["model"] == "gemini-2.5-pro"
    new = _lines(tmp_path, "results-*.jsonl")
    assert {row["model"] for row in new} == {"gemini-2.5-pro"} and len(new) == 6
    kept = _lines(tmp_path, "superseded/*/results-*.jsonl")
    assert sorted(json.dumps(row, sort_keys=True) for row in kept) == sorted(json.dumps(r, sort_keys=True) for r in old)
    # the two models answer differently (the emulator's answers depend on the model too)
    assert {row["key"]: row["text"] for row in new} != {row["key"]: row["text"] for row in old}


def test_a_bad_on_changed_request_fails_when_the_dag_is_parsed(tmp_path):
    with pytest.raises(ValueError, match="on_changed_request must be one of"):
        _enrich(tmp_path, on_changed_request="ignore")


# ---- a pydantic class as response_schema


def test_a_pydantic_class_is_not_rendered_as_a_template(connection, tmp_path):
    task = _enrich(tmp_path, response_schema=Tags)
    task.render_template_fields(context={"ds": "2026-12-02"})
    assert task.response_schema is Tags


def test_pydantic_schemas_in_the_decorator_and_the_enrichment_under_dag_test(connection, run_dag_file, tmp_path):
    dag_run = run_dag_file(
        f"""
        from datetime import datetime

        from airflow.sdk import DAG, task
        from pydantic import BaseModel

        from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator


        class Tags(BaseModel):
            category: str
            score: int


        with DAG("flex_pydantic_schemas", schedule=None, start_date=datetime(2026, 1, 1)):

            @task.gemini_flex(model="gemini-2.5-flash", response_schema=Tags)
            def tag(subject: str) -> str:
                return f"Tag {{subject}}"

            enrich = GeminiFlexEnrichOperator(
                task_id="enrich",
                records=[{{"id": i, "name": f"item {{i}}"}} for i in range(5)],
                key_field="id",
                prompt_template="Tag {{{{ row.name }}}}",
                response_schema=Tags,
                output_path={str(tmp_path)!r},
                model="gemini-2.5-flash",
            )

            @task
            def check(tagged: dict, summary: dict) -> None:
                assert set(tagged["parsed"]) == {{"category", "score"}}, tagged
                assert summary["succeeded"] == 5 and summary["failed"] == 0, summary

            check(tag("a lamp"), enrich.output)
        """,
        "flex_pydantic_schemas",
    )
    assert dag_run.state == "success"
    assert len(_lines(tmp_path, "results-*.jsonl")) == 5


# ---- reading an enrichment's output


def test_read_results_gives_every_row_with_its_status(connection, tmp_path):
    from airflow_provider_flex.enrichment.store import read_results

    records = _rows(5)
    records[2]["question"] += " [emulator:block]"
    _enrich(tmp_path, records=records, max_failed_fraction=1.0).execute(context={})
    answers = read_results(str(tmp_path))
    assert sorted(row["key"] for row in answers) == ["q0", "q1", "q3", "q4"]
    assert all(row["status"] == "ok" and row["text"] and row["model"] == "gemini-2.5-flash" for row in answers)
    every = read_results(str(tmp_path), include_failed=True)
    failed = [row for row in every if row["status"] == "failed"]
    assert [(row["key"], row["error_kind"]) for row in failed] == [("q2", "blocked")]
    with pytest.raises(FileNotFoundError, match="no enrichment output at"):
        read_results(str(tmp_path / "missing"))


def test_include_prompt_writes_each_rows_prompt_beside_its_answer(connection, tmp_path):
    from airflow_provider_flex.enrichment.store import read_results

    _enrich(tmp_path / "with", include_prompt=True).execute(context={})
    _enrich(tmp_path / "without").execute(context={})
    with_prompts = read_results(str(tmp_path / "with"))
    assert sorted(row["prompt"] for row in with_prompts) == [f"Judge question {i}" for i in range(6)]
    assert all("prompt" not in row for row in read_results(str(tmp_path / "without")))
