"""One OpenTelemetry span per flex call, following the GenAI semantic conventions, when tracing is on.

Airflow installs an SDK ``TracerProvider`` in a process when ``[traces] otel_on`` is set; this
module only looks for it. With none (tracing off, the default) it emits nothing and imports nothing:
the check reads ``sys.modules`` and the global provider. A span is recorded once a call has ended
(answered or failed), from its start time, so the four call paths (sync and async, generate and
stream) share one place: :func:`record_call_span`, called by ``FlexCall``. It nests under the current
span (the task's span on a worker).

Prompts and answers go on spans only with ``[gemini_flex] trace_content = True``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import Any

from airflow_provider_flex.spend import spend_of

#: Semantic-convention names (OpenTelemetry GenAI conventions) and this provider's own.
OPERATION = "generate_content"
TRACER_NAME = "airflow_provider_flex"


def live_tracer() -> Any | None:
    """Return the tracer of the process's configured SDK provider, or None when tracing is off."""
    api = sys.modules.get("opentelemetry.trace")
    sdk = sys.modules.get("opentelemetry.sdk.trace")
    if api is None or sdk is None:
        return None
    provider = api.get_tracer_provider()
    if not isinstance(provider, sdk.TracerProvider):
        return None
    return provider.get_tracer(TRACER_NAME)


def content_wanted() -> bool:
    from airflow_provider_flex.compat import conf

    return conf.getboolean("gemini_flex", "trace_content", fallback=False)


def call_attributes(
    *,
    model: str,
    provider_name: str,
    requested_tier: str,
    attempts: int,
    elapsed_s: float,
    last_attempt_s: float | None,
    result: Mapping[str, Any] | None,
    error: BaseException | None,
) -> dict[str, Any]:
    """Return a call's span attributes (pure: the tests read them without a tracer)."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.provider.name": provider_name,
        "gen_ai.request.model": model,
        "gemini_flex.requested_tier": requested_tier,
        "gemini_flex.attempts": attempts,
        "gemini_flex.elapsed_s": round(elapsed_s, 3),
    }
    if last_attempt_s is not None:
        # the answered (or last) attempt, request sent to answer: the flex queue wait plus generation
        attributes["gemini_flex.queue_wait_s"] = round(last_attempt_s, 3)
    spend = spend_of(result)  # the one reading of a result's usage, as the spend view and lineage read it
    if result is not None and spend is not None:
        attributes.update(
            {
                "gen_ai.response.model": result["model"],
                "gen_ai.usage.input_tokens": spend.input_tokens,
                "gen_ai.usage.output_tokens": spend.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": spend.cached_tokens,
                "gemini_flex.service_tier": result["service_tier"],
                "gemini_flex.rate_limited_429": spend.rate_limited_429,
                "gemini_flex.unavailable_503": spend.unavailable_503,
            }
        )
        if result["finish_reason"]:
            attributes["gen_ai.response.finish_reasons"] = [str(result["finish_reason"])]
        for name in ("cost_usd", "standard_cost_usd"):
            if result[name] is not None:
                attributes[f"gemini_flex.{name}"] = result[name]
    if error is not None:
        attributes["error.type"] = type(error).__name__
    return attributes


def content_attributes(contents: Any, text: str | None) -> dict[str, str]:
    """Return the prompt and the answer as GenAI message attributes (only with ``trace_content``)."""
    prompt = contents if isinstance(contents, str) else repr(contents)[:10_000]
    attributes = {
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": prompt}]}])
    }
    if text is not None:
        attributes["gen_ai.output.messages"] = json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": text}]}]
        )
    return attributes


def record_call_span(
    tracer: Any,
    *,
    started_wall_s: float,
    attributes: Mapping[str, Any],
    error: BaseException | None = None,
) -> None:
    """Record the span of a call that began at ``started_wall_s`` (epoch seconds) and ended now."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    span = tracer.start_span(
        f"{OPERATION} {attributes['gen_ai.request.model']}",
        kind=SpanKind.CLIENT,
        start_time=int(started_wall_s * 1e9),
        attributes=dict(attributes),
    )
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, str(error)[:500]))
    span.end(end_time=time.time_ns())


def record_batch_job_event(job: str, state: str, age_s: float, counts: Mapping[str, int]) -> None:
    """Add a ``gemini_flex.batch_job`` event (name, state, age, ``batchStats``) to the current span (the task's),
    when tracing is on; nothing otherwise."""
    if live_tracer() is None:
        return
    from opentelemetry import trace

    attributes: dict[str, Any] = {"gemini_flex.batch.job": job, "gemini_flex.batch.state": state,
                                  "gemini_flex.batch.age_s": round(age_s, 1)}  # fmt: skip
    attributes.update({f"gemini_flex.batch.{name}_requests": int(value) for name, value in counts.items()})
    trace.get_current_span().add_event("gemini_flex.batch_job", attributes)
