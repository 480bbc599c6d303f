"""Retries, deadlines, fallback and streams through the hook, on the emulator, sync and async."""

from __future__ import annotations

import time

import pytest

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.exceptions import (
    FlexCapacityError,
    FlexRequestError,
    FlexResponseError,
    FlexStreamInterrupted,
)
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from tests.hooks.conftest import API_KEY, FAST, run_generate, run_stream

MODES = ["sync", "async"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("unavailable", {}),
        ("rate_limited", {"retry_delay_s": 0.1}),
        ("internal", {}),
        ("bad_gateway", {}),
        ("deadline_exceeded", {}),
        ("drop", {}),
        ("non_json", {}),
    ],
)
def test_retryable_fault_then_success(hook, emulator, mode, kind, fields):
    emulator.admin.inject(kind, count=2, **fields)
    response = run_generate(hook, mode, contents="classify me")
    assert response.attempts == 3
    assert response.service_tier == "flex"
    assert response.text.startswith("Flex emulator answer")
    assert emulator.admin.stats()["calls_by_tier"] == {"flex": 3}


@pytest.mark.parametrize("mode", MODES)
def test_retry_info_delay_is_waited_even_when_backoff_is_shorter(hook, emulator, mode):
    emulator.admin.inject("rate_limited", retry_delay_s=1.0)
    started = time.monotonic()
    response = run_generate(hook, mode, contents="x")
    assert time.monotonic() - started >= 1.0
    assert response.attempts == 2


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("kind", "code"), [("invalid_argument", 400), ("permission_denied", 403)])
def test_non_retryable_status_fails_after_one_call(hook, emulator, mode, kind, code):
    emulator.admin.inject(kind)
    with pytest.raises(FlexRequestError) as raised:
        run_generate(hook, mode, contents="x")
    assert raised.value.code == code
    assert emulator.admin.stats()["requests"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_unknown_model_fails_after_one_call(hook, emulator, mode):
    with pytest.raises(FlexRequestError) as raised:
        run_generate(hook, mode, contents="x", model="gemini-0-nope")
    assert (raised.value.code, raised.value.status) == (404, "NOT_FOUND")


def test_bad_key_is_401_or_403_and_not_retried(set_connection):
    with FlexEmulator(api_key="the-right-key") as emulator:
        set_connection(host=emulator.base_url, password="a-wrong-key")
        with pytest.raises(FlexRequestError) as raised:
            GeminiFlexHook(retry_policy=FAST).generate_content(contents="x")
        assert raised.value.code == 403
        assert emulator.admin.stats()["api_requests"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_max_attempts_then_capacity_error_and_never_standard(set_connection, mode):
    with FlexEmulator(preempt_rate=1.0) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        hook = GeminiFlexHook(retry_policy=FlexRetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0))
        with pytest.raises(FlexCapacityError) as raised:
            run_generate(hook, mode, contents="x")
        error = raised.value
        assert (error.attempts, error.last_status) == (3, 503)
        assert "3 attempt(s)" in str(error) and "503" in str(error)
        assert emulator.admin.stats()["calls_by_tier"] == {"flex": 3}


@pytest.mark.parametrize("mode", MODES)
def test_deadline_stops_before_max_attempts(set_connection, mode):
    with FlexEmulator(preempt_rate=1.0) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        policy = FlexRetryPolicy(max_attempts=100, initial_delay=0.2, multiplier=1, jitter=0, deadline=1.0)
        with pytest.raises(FlexCapacityError) as raised:
            run_generate(GeminiFlexHook(retry_policy=policy), mode, contents="x")
    # Waits of 0.2 s within 1 s of patience leave room for at most 5 attempts (fewer on a busy machine),
    # 100 without the deadline; no wait starts that would end past it, only the last attempt may overrun.
    assert 2 <= raised.value.attempts <= 5
    assert raised.value.waited_s < policy.deadline + 1.0


@pytest.mark.parametrize("mode", MODES)
def test_fallback_serves_the_last_try_on_standard(hook, emulator, mode, captured_logs):
    policy = FlexRetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0, fallback_to_standard=True)
    emulator.admin.inject("unavailable", count=2)
    response = run_generate(GeminiFlexHook(retry_policy=policy), mode, contents="x")
    logs = captured_logs()
    assert (response.service_tier, response.requested_tier, response.attempts) == ("standard", "flex", 3)
    assert emulator.admin.stats()["calls_by_tier"] == {"flex": 2, "standard": 1}
    assert "falling back to the standard tier" in logs
    assert "standard $0.5/$3 vs flex $0.25/$1.5" in logs


def test_fallback_off_never_calls_standard_even_when_exhausted(hook, emulator):
    emulator.admin.inject("unavailable", count=10)
    with pytest.raises(FlexCapacityError):
        hook.generate_content(contents="x")
    assert "standard" not in emulator.admin.stats()["calls_by_tier"]


@pytest.mark.parametrize("mode", MODES)
def test_per_attempt_timeout_on_a_slow_answer(connection, mode):
    connection.admin.inject("slow", delay_s=10)
    hook = GeminiFlexHook(retry_policy=FAST, timeout=1)
    started = time.monotonic()
    response = run_generate(hook, mode, contents="x")
    assert response.attempts == 2
    assert time.monotonic() - started < 6  # a 1 s timeout, a short wait, a quick answer; 10 s without the timeout


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["stream_cut", "drop"])
def test_stream_failing_before_any_text_is_retried(hook, emulator, mode, kind):
    emulator.admin.inject(kind, method="stream", after_chunks=0)
    pieces, result = run_stream(hook, mode, contents="a long story")
    assert result.attempts == 2
    assert result.finish_reason == "STOP"
    assert "".join(pieces) == result.text == hook.generate_content(contents="a long story").text
    assert result.usage.output_tokens > 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["stream_cut", "drop"])
def test_stream_failing_after_text_raises_interrupted(hook, emulator, mode, kind):
    emulator.admin.inject(kind, method="stream", after_chunks=2)
    with pytest.raises(FlexStreamInterrupted) as raised:
        run_stream(hook, mode, contents="a long story")
    assert raised.value.chars_received > 0
    assert emulator.admin.stats()["requests"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_blocked_prompt_is_an_unusable_answer(hook, emulator, mode):
    emulator.admin.inject("blocked")
    with pytest.raises(FlexResponseError, match="blocked"):
        run_generate(hook, mode, contents="x")
    assert emulator.admin.stats()["requests"] == 1


def test_schema_answer_cut_by_max_tokens_is_unusable(hook):
    config = {
        "response_mime_type": "application/json",
        "response_json_schema": {"type": "object", "properties": {"a": {"type": "string"}}},
        "max_output_tokens": 2,
    }
    with pytest.raises(FlexResponseError, match="maxOutputTokens"):
        hook.generate_content(contents="x", config=config)
