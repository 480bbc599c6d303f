"""Bad input: each a clear error, naming what is wrong, before or at its first call, with nothing
half-written. Generate and stream operators run on the worker and, where deferrable, through the
real trigger; enrichment input is checked whole before any call.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.enrichment.records import EnrichInputError
from airflow_provider_flex.exceptions import FlexError, FlexRequestError
from airflow_provider_flex.operators.gemini_flex import (
    GeminiFlexEnrichOperator,
    GeminiFlexGenerateContentOperator,
    GeminiFlexStreamContentOperator,
)

KEY = "the-right-key-0123456789"
LONG_PROMPT = "word " * 400


def _run(operator: GeminiFlexGenerateContentOperator) -> dict:
    """Run as Airflow would: on the worker, or deferred to the trigger and resumed with its event."""
    try:
        return operator.execute(context={})
    except TaskDeferred as deferred:
        event = asyncio.run(anext(deferred.trigger.run()))
        return getattr(operator, deferred.method_name)(context={}, event=event.payload)


@pytest.fixture
def api(set_connection):
    with FlexEmulator(api_key=KEY, input_token_limit=100) as emulator:
        set_connection(host=emulator.base_url, password=KEY)
        yield emulator


@pytest.mark.parametrize("deferrable", [False, True])
@pytest.mark.parametrize(
    ("arguments", "error", "message", "calls"),
    [
        ({"contents": "   "}, ValueError, "Task 'ask': contents is empty", 0),
        ({"contents": []}, ValueError, "Task 'ask': contents is empty", 0),
        (
            {"contents": LONG_PROMPT},
            FlexRequestError,
            "400 INVALID_ARGUMENT: The input token count (400) exceeds the maximum number of tokens allowed (100)",
            1,
        ),
        ({"contents": "hi", "model": "gemini-nope"}, FlexRequestError, "404 NOT_FOUND", 1),
    ],
)
def test_generate_bad_requests(api, deferrable, arguments, error, message, calls):
    with pytest.raises(error, match=re.escape(message)):
        _run(GeminiFlexGenerateContentOperator(task_id="ask", deferrable=deferrable, **arguments))
    assert api.admin.stats()["api_requests"] == calls  # refused once, never retried


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "objekt"}, "Task 'ask': response_schema is not a valid JSON Schema at type"),
        ({"type": "object", "required": "name"}, "response_schema is not a valid JSON Schema at required"),
        (["not", "a", "schema"], "Task 'ask': response_schema must be a JSON Schema dict or a pydantic model class"),
    ],
)
def test_invalid_response_schema_fails_when_the_dag_is_parsed(schema, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        GeminiFlexGenerateContentOperator(task_id="ask", contents="x", response_schema=schema)


def test_prompt_over_the_limit_in_a_stream_leaves_no_file(api, tmp_path):
    target = tmp_path / "digest.md"
    with pytest.raises(FlexRequestError, match="exceeds the maximum number of tokens"):
        GeminiFlexStreamContentOperator(task_id="digest", contents=LONG_PROMPT, output_path=str(target)).execute({})
    assert list(tmp_path.iterdir()) == [] and api.admin.stats()["api_requests"] == 1


@pytest.mark.parametrize("deferrable", [False, True])
def test_bad_key_is_refused_once_and_never_shown(set_connection, deferrable):
    wrong = "wrong-key-abcdef-987654"
    with FlexEmulator(api_key=KEY) as emulator:
        set_connection(host=emulator.base_url, password=wrong)
        with pytest.raises(FlexRequestError) as refused:
            _run(GeminiFlexGenerateContentOperator(task_id="ask", contents="hi", deferrable=deferrable))
        requests = emulator.admin.stats()["api_requests"]
    assert refused.value.code in (400, 401, 403) and requests == 1
    assert wrong not in str(refused.value) and wrong not in repr(refused.value)


@pytest.mark.parametrize("deferrable", [False, True])
def test_missing_key_names_the_connection_before_any_call(set_connection, monkeypatch, deferrable):
    with FlexEmulator() as emulator:
        set_connection(host=emulator.base_url)
        with pytest.raises(FlexError, match=r"gemini_flex_default.*has no API key"):
            _run(GeminiFlexGenerateContentOperator(task_id="ask", contents="hi", deferrable=deferrable))
        assert emulator.admin.stats()["api_requests"] == 0


ROW = '{"id": "%s", "title": "t%s"}\n'


@pytest.mark.parametrize(
    ("name", "content", "template", "message"),
    [
        (
            "rows.jsonl",
            ROW % (1, 1) + '{"id": "2", "title": \n' + ROW % (3, 3),
            None,
            "rows.jsonl line 2: not valid JSON",
        ),
        ("rows.jsonl", ROW % (1, 1) + "[1, 2]\n", None, "rows.jsonl line 2: expected a JSON object"),
        ("rows.csv", "id,title\n1,a\n2,b,extra\n", None, "rows.csv row 2 (line 3): expected 2 fields"),
        ("rows.csv", "id,title\n1,a\n2\n", None, "rows.csv row 2 (line 3): expected 2 fields"),
        ("rows.jsonl", ROW % (1, 1) + ROW % (2, 2) + ROW % (1, 3), None, "duplicate key '1' in rows 1 and 3"),
        ("rows.jsonl", ROW % (1, 1) + '{"title": "x"}\n', None, "row 2 has no value for key_field 'id'"),
        ("rows.jsonl", ROW % (1, 1) + ROW % (2, 2), "{{ row.colour }}", "fails on row 1 (key '1')"),
        (
            "rows.jsonl",
            ROW % (1, 1) + '{"id": "2"}\n',
            None,
            "prompt_template fails on row 2 (key '2'): 'dict object' has no attribute 'title'",
        ),
        ("rows.jsonl", ROW % (1, 1) + '{"id": "2", "title": ""}\n', "{{ row.title }}", "empty prompt for row 2"),
    ],
)
def test_bad_enrichment_input_fails_before_any_call_and_writes_nothing(api, tmp_path, name, content, template, message):
    source = tmp_path / name
    source.write_text(content)
    output = tmp_path / "out"
    operator = GeminiFlexEnrichOperator(
        task_id="enrich",
        input_path=str(source),
        key_field="id",
        prompt_template=template or "Describe {{ row.title }}",
        output_path=str(output),
        on_duplicate_key="fail",
        on_bad_row="fail",
    )
    with pytest.raises(EnrichInputError, match=re.escape(message)):
        operator.execute(context={})
    assert api.admin.stats()["api_requests"] == 0
    assert not output.exists() or list(Path(output).iterdir()) == []
