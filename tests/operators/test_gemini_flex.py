"""Operators and the trigger against the emulator, including real DAG runs under dag.test()."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path

import pydantic
import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_flex.emulator.media import png
from airflow_provider_flex.exceptions import FlexCapacityError, FlexError, FlexRequestError, FlexResponseError
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import (
    GeminiFlexGenerateContentOperator,
    GeminiFlexStreamContentOperator,
)
from airflow_provider_flex.operators.generate import DEFERRAL_MARGIN_S
from airflow_provider_flex.operators.stream import STREAM_LOG_LINE_CHARS
from airflow_provider_flex.triggers.gemini_flex import GeminiFlexGenerateContentTrigger
from tests.hooks.conftest import API_KEY

FAST = FlexRetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=0.1, jitter=0, deadline=30)


class Review(pydantic.BaseModel):
    sentiment: str
    stars: int


def _operator(**kwargs) -> GeminiFlexGenerateContentOperator:
    kwargs.setdefault("task_id", "generate")
    kwargs.setdefault("contents", "Summarise the flex tier")
    kwargs.setdefault("retry_policy", FAST)
    return GeminiFlexGenerateContentOperator(**kwargs)


def test_non_deferrable_execute_returns_the_summary(connection, captured_logs):
    result = _operator(deferrable=False, model="gemini-2.5-flash", response_schema=Review).execute(context={})
    assert result["service_tier"] == "flex"
    assert Review.model_validate(result["parsed"])
    assert result["cost_usd"] > 0 and result["usage"]["prompt_tokens"] > 0
    assert json.loads(json.dumps(result)) == result
    assert "Flex result: model=gemini-2.5-flash tier=flex" in captured_logs()


def test_deferrable_execute_defers_with_a_keyless_round_tripping_trigger(connection):
    with pytest.raises(TaskDeferred) as deferred:
        _operator(deferrable=True, system_instruction="Be brief.").execute(context={})
    trigger = deferred.value.trigger
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout == timedelta(seconds=FAST.deadline + DEFERRAL_MARGIN_S)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_flex.triggers.gemini_flex.GeminiFlexGenerateContentTrigger"
    assert API_KEY not in json.dumps(kwargs)
    assert GeminiFlexGenerateContentTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert connection.admin.stats()["requests"] == 0, "the worker must not call the API when deferring"


@pytest.mark.parametrize("path", ["worker", "triggerer"])
def test_a_single_media_location_is_one_part_on_a_worker_and_in_the_triggerer(connection, tmp_path, path):
    photo = tmp_path / "mug.png"
    photo.write_bytes(png(32, 32, "mug"))
    operator = _operator(deferrable=path == "triggerer", contents="Describe the mug", media=str(photo))
    if path == "worker":
        operator.execute(context={})
    else:  # the trigger the triggerer builds for a task that starts there
        kwargs = operator.start_trigger_args.trigger_kwargs
        assert _run_trigger(GeminiFlexGenerateContentTrigger(**kwargs))["status"] == "success"
    (call,) = connection.admin.calls()
    assert call["parts"][1] == {"type": "inline_data", "mime_type": "image/png", "bytes": photo.stat().st_size}


def _run_trigger(trigger: GeminiFlexGenerateContentTrigger) -> dict:
    async def first_event():
        return (await anext(trigger.run())).payload

    return asyncio.run(first_event())


def test_trigger_runs_to_success(connection):
    event = _run_trigger(GeminiFlexGenerateContentTrigger(contents="hello", retry_policy=FAST.to_dict()))
    assert event["status"] == "success"
    assert event["result"]["service_tier"] == "flex"
    assert _operator().execute_complete({}, event)["text"] == event["result"]["text"]


@pytest.mark.parametrize(
    ("kind", "error_class"),
    [("unavailable", FlexCapacityError), ("invalid_argument", FlexRequestError), ("blocked", FlexResponseError)],
)
def test_trigger_error_events_raise_the_same_errors(connection, kind, error_class):
    connection.admin.inject(kind, count=5)
    event = _run_trigger(GeminiFlexGenerateContentTrigger(contents="hello", retry_policy=FAST.to_dict()))
    assert event["status"] == "error"
    assert event["error_type"] == error_class.__name__
    assert API_KEY not in json.dumps(event)
    with pytest.raises(error_class) as raised:
        _operator().execute_complete({}, event)
    if error_class is FlexCapacityError:
        assert raised.value.attempts == 3 and raised.value.last_status == 503


@pytest.mark.parametrize("event", [None, {}, {"status": "weird"}, {"status": "success"}])
def test_execute_complete_rejects_malformed_events(event):
    with pytest.raises(FlexError):
        _operator().execute_complete({}, event)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"service_tier": "cheapest"}, "Unknown service tier"),
        ({"response_schema": 42}, "response_schema must be a JSON Schema dict or a pydantic model class"),
        ({"response_schema": str}, "response_schema must be a JSON Schema dict or a pydantic model class"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _operator(**kwargs)


@pytest.mark.parametrize("contents", ["", "   ", [], None])
def test_empty_contents_fail_before_any_call(connection, contents):
    with pytest.raises(ValueError, match="contents is empty"):
        _operator(contents=contents, deferrable=False).execute(context={})
    assert connection.admin.stats()["api_requests"] == 0


def test_stream_operator_logs_whole_lines_and_writes_the_file(connection, tmp_path, captured_logs):
    output = tmp_path / "out" / "digest.md"
    operator = GeminiFlexStreamContentOperator(
        task_id="stream", contents="Write a short digest", output_path=str(output), retry_policy=FAST
    )
    result = operator.execute(context={})
    text = output.read_text()
    assert text == result["text"] and result["finish_reason"] == "STOP"
    # the premise: an answer on one line, shorter than a logged line's limit (the emulator's answers depend
    # on the prompt and the model; this prompt's is short)
    assert "\n" not in text and len(text) < STREAM_LOG_LINE_CHARS
    logs = captured_logs()
    assert text in logs, "a single-line answer is logged as one whole line"
    assert not list(output.parent.glob(".*partial"))


def test_interrupted_stream_writes_no_file(connection, tmp_path):
    connection.admin.inject("stream_cut", after_chunks=2)
    output = tmp_path / "digest.md"
    operator = GeminiFlexStreamContentOperator(
        task_id="s", contents="digest", output_path=str(output), retry_policy=FAST
    )
    with pytest.raises(FlexError, match="Stream interrupted"):
        operator.execute(context={})
    assert not output.exists()


def _generate_then_save_dag(dag_id: str, results: Path, dag_arguments: str, operator_arguments: str) -> str:
    """A DAG file: one generate task (with ``operator_arguments``), then a task saving its XCom to ``results``."""
    return f"""
        import json
        from airflow.sdk import DAG, task
        from airflow_provider_flex.operators.gemini_flex import GeminiFlexGenerateContentOperator

        with DAG({dag_id!r}, schedule=None, {dag_arguments}):
            generate = GeminiFlexGenerateContentOperator(
                task_id="generate",
                {operator_arguments.strip()}
            )

            @task
            def save(result: dict) -> None:
                open({str(results)!r}, "w").write(json.dumps(result))

            save(generate.output)
    """


def test_templated_fields_render_in_a_real_dag_run(connection, run_dag_file, tmp_path):
    (tmp_path / "prompt.txt").write_text("Classify {{ params.item }} in {{ dag.dag_id }}")
    results = tmp_path / "results.json"
    dag_id = f"templating_{uuid.uuid4().hex[:8]}"
    source = _generate_then_save_dag(
        dag_id,
        results,
        f"template_searchpath=[{str(tmp_path)!r}], params={{'item': 'a teapot'}}",
        """
                contents="prompt.txt",
                system_instruction="You label {{ params.item }}.",
                model="{{ 'gemini-2.5-' ~ 'flash' }}",
                deferrable=False,
        """,
    )
    dag_run = run_dag_file(source, dag_id)
    assert dag_run.state == "success"
    result = json.loads(results.read_text())
    assert result["model"] == "gemini-2.5-flash"
    assert [call["prompt"] for call in connection.admin.calls()] == [
        f"You label a teapot.\nClassify a teapot in {dag_id}"
    ]


def test_deferrable_task_completes_under_dag_test(connection, run_dag_file, tmp_path):
    results = tmp_path / "results.json"
    dag_id = f"deferred_{uuid.uuid4().hex[:8]}"
    source = _generate_then_save_dag(
        dag_id,
        results,
        "",
        """
                contents="Judge this answer",
                response_schema={"type": "object", "properties": {"stars": {"type": "integer"}}, "required": ["stars"]},
                retry_policy={"max_attempts": 3, "initial_delay": 0.05},
                deferrable=True,
        """,
    )
    dag_run = run_dag_file(source, dag_id)
    assert dag_run.state == "success"
    result = json.loads(results.read_text())
    assert result["service_tier"] == "flex"
    assert isinstance(result["parsed"]["stars"], int)
    assert connection.admin.stats()["calls"]["flex"] == {"ok": 1}


LONG_INSTRUCTION = " ".join(f"rule{i} applies." for i in range(700))


@pytest.mark.parametrize("path", ["worker", "triggerer", "stream"])
def test_cached_content_names_the_cache_on_a_worker_in_the_triggerer_and_in_a_stream(connection, path):
    from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook

    cache = GeminiFlexHook().caches.create(model="gemini-2.5-flash", system_instruction=LONG_INSTRUCTION, ttl_s=600)
    arguments = {"task_id": "judge", "contents": "Judge: rake", "cached_content": cache.name, "retry_policy": FAST,
                 "model": "gemini-2.5-flash"}  # fmt: skip
    if path == "stream":
        result = GeminiFlexStreamContentOperator(**arguments).execute(context={})
    elif path == "worker":
        result = GeminiFlexGenerateContentOperator(deferrable=False, **arguments).execute(context={})
    else:
        operator = GeminiFlexGenerateContentOperator(deferrable=True, **arguments)
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute(context={})
        assert deferred.value.trigger.serialize()[1]["cached_content"] == cache.name
        result = _run_trigger(deferred.value.trigger)["result"]
    assert result["usage"]["cached_tokens"] == cache.tokens
    (call,) = connection.admin.calls()
    assert call["prompt"].startswith("rule0 applies.") and call["prompt_tokens"] == cache.tokens + 3  # "Judge: rake"


def test_cached_content_with_a_system_instruction_fails_when_the_dag_is_parsed():
    with pytest.raises(ValueError, match=r"Task 'judge'.*cannot be combined with system_instruction"):
        GeminiFlexGenerateContentOperator(
            task_id="judge", contents="x", cached_content="cachedContents/abc", system_instruction="Be brief."
        )
