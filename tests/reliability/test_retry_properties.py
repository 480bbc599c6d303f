"""Property tests of the retry policy: the pure schedule, the error classes, and the real hook over HTTP.

Promises: the schedule never runs past the deadline nor past max_attempts,
always waits at least the server's retryDelay, and no 4xx other than 429 is
ever retried.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_flex.exceptions import FlexCapacityError, FlexRequestError
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.hooks.retry import (
    RETRYABLE_STATUS_CODES,
    FlexRetryPolicy,
    classify_error,
    parse_retry_delay,
    plan_retry,
)
from tests.hooks.conftest import run_generate

policies = st.builds(
    FlexRetryPolicy,
    max_attempts=st.integers(1, 40),
    initial_delay=st.floats(0, 30),
    max_delay=st.floats(0, 600),
    multiplier=st.floats(1, 4),
    jitter=st.floats(0, 1),
    deadline=st.floats(0.5, 7200),
)
# one failed attempt: how long it took, the server's requested delay (if any), the jitter draw
failures = st.tuples(st.floats(0, 120), st.one_of(st.none(), st.floats(0, 900)), st.floats(0, 1, exclude_max=True))


@given(policy=policies, attempts=st.lists(failures, min_size=1, max_size=50))
@settings(max_examples=500)
def test_schedule_stays_within_deadline_and_attempts_and_honours_server_delay(policy, attempts):
    elapsed = 0.0
    made = 0
    for took, server_delay, draw in attempts:
        made += 1
        elapsed += took
        if elapsed >= policy.deadline:
            break
        delay = plan_retry(policy, attempt=made, elapsed_s=elapsed, server_delay_s=server_delay, jitter_draw=draw)
        if delay is None:
            break
        assert delay >= 0
        assert elapsed + delay < policy.deadline  # never sleeps past the deadline
        assert made < policy.max_attempts  # a retry is only planned while attempts remain
        if server_delay is not None:
            assert delay >= server_delay  # never sooner than the server asked
        else:
            assert delay <= policy.max_delay * (1 + policy.jitter)
        elapsed += delay
    assert made <= policy.max_attempts


@given(
    policy=policies,
    attempt=st.integers(1, 40),
    step=st.integers(-5, 60),
    elapsed=st.floats(0, 7200),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_a_shared_backoff_step_only_ever_shortens_a_wait(policy, attempt, step, elapsed, draw):
    own = plan_retry(policy, attempt=attempt, elapsed_s=elapsed, server_delay_s=None, jitter_draw=draw)
    shared = plan_retry(
        policy, attempt=attempt, elapsed_s=elapsed, server_delay_s=None, jitter_draw=draw, backoff_step=step
    )
    if own is not None:  # never longer than the row's own backoff, and no retry where there was none
        assert shared is not None and shared <= own
    if attempt >= policy.max_attempts:
        assert shared is None
    if shared is not None:
        assert elapsed + shared < policy.deadline


@given(code=st.integers(400, 599), seconds=st.one_of(st.none(), st.integers(0, 3600)))
def test_only_429_and_server_errors_are_retryable(code, seconds):
    from google.genai import errors

    details = (
        [] if seconds is None else [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds}s"}]
    )
    body = {"error": {"code": code, "message": "m", "status": "S", "details": details}}
    failure = classify_error(errors.APIError(code, body))
    assert failure.retryable == (code in RETRYABLE_STATUS_CODES)
    if 400 <= code < 500:
        assert failure.retryable == (code == 429)
    assert failure.server_delay_s == (None if seconds is None else float(seconds))


@given(seconds=st.integers(0, 10**6), nanos=st.integers(0, 999_999_999))
def test_retry_delay_in_either_wire_form_reads_back(seconds, nanos):
    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo"}
    as_object = {"error": {"details": [{**info, "retryDelay": {"seconds": seconds, "nanos": nanos}}]}}
    as_string = {"error": {"details": [{**info, "retryDelay": f"{seconds}s"}]}}
    assert parse_retry_delay(as_object) == pytest.approx(seconds + nanos / 1e9)
    assert parse_retry_delay(as_string) == seconds


FAST = FlexRetryPolicy(max_attempts=4, initial_delay=0.001, max_delay=0.01, jitter=0, deadline=30)


@given(codes=st.lists(st.sampled_from([400, 401, 403, 404, 409, 413, 429, 499, 500, 502, 503, 504]), max_size=5))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_real_hook_retries_exactly_the_retryable_codes(connection, mode, codes):
    """Any sequence of error answers through google-genai over HTTP: the hook stops at the first 4xx other
    than 429, retries the rest up to max_attempts, and never calls another tier."""
    emulator = connection
    emulator.admin.reset()
    for code in codes:
        emulator.admin.inject("http_error", status_code=code)
    hook = GeminiFlexHook(retry_policy=FAST)
    first_fatal = next((i for i, code in enumerate(codes) if code < 500 and code != 429), None)
    try:
        run_generate(hook, mode, contents="property")
        outcome = "ok"
    except FlexRequestError as error:
        outcome = error.code
    except FlexCapacityError:
        outcome = "exhausted"
    calls = emulator.admin.calls()
    if first_fatal is not None and first_fatal < FAST.max_attempts:
        assert outcome == codes[first_fatal] and len(calls) == first_fatal + 1
    elif len(codes) >= FAST.max_attempts:
        assert outcome == "exhausted" and len(calls) == FAST.max_attempts
    else:
        assert outcome == "ok" and len(calls) == len(codes) + 1
    assert {call["tier"] for call in calls} == {"flex"}
