"""GenAI spans: one per call when Airflow's tracing is on, nothing when it is off.

Each case runs in a fresh interpreter: OpenTelemetry's global tracer provider can be set once per
process. The provider is an SDK TracerProvider with an in-memory exporter, as Airflow's
``[traces] otel_on`` installs one (with an OTLP exporter) in a task's process.
"""

from __future__ import annotations

import json
import subprocess
import sys

from airflow_provider_flex.emulator import FlexEmulator
from tests.hooks.conftest import API_KEY

PROBE = r"""
import asyncio, json, os, sys
TRACING = sys.argv[1] == "on"
if TRACING:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("task")

from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.triggers.gemini_flex import GeminiFlexGenerateContentTrigger

hook = GeminiFlexHook()
def calls():
    hook.generate_content(contents="Grade this answer: 42", model="gemini-2.5-flash")
    "".join(hook.stream_content(contents="Stream a haiku", model="gemini-2.5-flash"))
    asyncio.run(anext(GeminiFlexGenerateContentTrigger(contents="judge in the triggerer", model="gemini-2.5-flash").run()))
    try:
        hook.generate_content(contents="x", model="no-such-model")
    except FlexError:
        pass

if TRACING:
    with tracer.start_as_current_span("task run") as task_span:
        calls()
    spans = exporter.get_finished_spans()
    print(json.dumps({
        "task_span": task_span.get_span_context().span_id,
        "spans": [{"name": s.name, "parent": s.parent.span_id if s.parent else None,
                   "attributes": dict(s.attributes), "status": s.status.status_code.name,
                   "duration_s": (s.end_time - s.start_time) / 1e9} for s in spans if s.name != "task run"],
    }, default=list))
else:
    before = set(sys.modules)
    calls()
    print(json.dumps({"new_otel_modules": sorted(m for m in set(sys.modules) - before if "opentelemetry" in m)}))
"""


def _probe(emulator: FlexEmulator, tracing: str, **env: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, tracing],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **__import__("os").environ,
            "AIRFLOW_CONN_GEMINI_FLEX_DEFAULT": emulator.connection_json(API_KEY),
            **env,
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_each_call_is_a_genai_span_under_the_task_span():
    with FlexEmulator(api_key=API_KEY, seed=3, preempt_rate=0.0) as emulator:
        found = _probe(emulator, "on")
    spans = found["spans"]
    assert len(spans) == 4  # generate, stream, a call in the triggerer, a refused call
    for span in spans:
        assert span["parent"] == found["task_span"]
        assert span["attributes"]["gen_ai.operation.name"] == "generate_content"
        assert span["attributes"]["gen_ai.provider.name"] == "gcp.gemini"
        assert "gen_ai.input.messages" not in span["attributes"]  # no prompt without the opt-in
        assert "gen_ai.output.messages" not in span["attributes"]
        assert API_KEY not in json.dumps(span)
    answered = [span for span in spans if span["status"] == "UNSET"]
    assert len(answered) == 3
    for span in answered:
        attributes = span["attributes"]
        assert span["name"] == "generate_content gemini-2.5-flash"
        assert attributes["gen_ai.request.model"] == "gemini-2.5-flash"
        assert attributes["gen_ai.usage.input_tokens"] > 0
        assert attributes["gen_ai.usage.output_tokens"] > 0
        assert "gen_ai.usage.cache_read.input_tokens" in attributes
        assert attributes["gemini_flex.service_tier"] == "flex"
        assert attributes["gemini_flex.attempts"] >= 1
        assert attributes["gemini_flex.cost_usd"] < attributes["gemini_flex.standard_cost_usd"]
        assert 0 < attributes["gemini_flex.queue_wait_s"] <= span["duration_s"] + 0.01
    (refused,) = [span for span in spans if span["status"] == "ERROR"]
    assert refused["attributes"]["error.type"] == "FlexRequestError"
    assert refused["attributes"]["gen_ai.request.model"] == "no-such-model"


def test_prompts_and_answers_go_on_spans_only_when_asked():
    with FlexEmulator(api_key=API_KEY, seed=3, preempt_rate=0.0) as emulator:
        found = _probe(emulator, "on", AIRFLOW__GEMINI_FLEX__TRACE_CONTENT="True")
    first = found["spans"][0]["attributes"]
    assert "Grade this answer: 42" in first["gen_ai.input.messages"]
    assert json.loads(first["gen_ai.output.messages"])[0]["parts"][0]["content"]


def test_nothing_is_traced_or_imported_when_tracing_is_off():
    with FlexEmulator(api_key=API_KEY, seed=3, preempt_rate=0.0) as emulator:
        found = _probe(emulator, "off")
    assert found["new_otel_modules"] == []


BATCH_PROBE = r"""
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

with trace.get_tracer("task").start_as_current_span("task run"):
    GeminiFlexEnrichOperator(
        task_id="enrich", key_field="id", prompt_template="Describe {{ row.title }}", output_path=sys.argv[1],
        records=[{"id": f"r{i}", "title": f"thing {i}"} for i in range(6)], route="batch",
        model="gemini-2.5-flash-lite", batch_poll_interval=0.2, deferrable=False,
    ).execute(context={})
(task,) = [s for s in exporter.get_finished_spans() if s.name == "task run"]
print(json.dumps([{"name": e.name, **dict(e.attributes)} for e in task.events]))
"""


def test_a_batch_job_is_an_event_on_the_task_span_with_the_apis_counts(tmp_path):
    from airflow_provider_flex.emulator.batch import BatchSettings

    with FlexEmulator(api_key=API_KEY, seed=3, batch=BatchSettings(turnaround_s=0.5)) as emulator:
        result = subprocess.run(
            [sys.executable, "-c", BATCH_PROBE, str(tmp_path / "out")],
            capture_output=True,
            text=True,
            timeout=120,
            env={**__import__("os").environ, "AIRFLOW_CONN_GEMINI_FLEX_DEFAULT": emulator.connection_json(API_KEY)},
        )
    assert result.returncode == 0, result.stderr[-3000:]
    events = json.loads(result.stdout.strip().splitlines()[-1])
    assert events and {e["name"] for e in events} == {"gemini_flex.batch_job"}
    assert events[-1]["gemini_flex.batch.state"] == "succeeded"
    assert events[-1]["gemini_flex.batch.successful_requests"] == 6 and events[-1]["gemini_flex.batch.age_s"] >= 0
