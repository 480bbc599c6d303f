"""Quotas through the hook: each 429 shape read, per-day refusals never retried, calls paced to known quotas."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.exceptions import FlexQuotaExhausted, error_from_payload, error_payload
from airflow_provider_flex.hooks.call import CallPacer
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.hooks.quota import (
    DAY_BLOCK_RECHECK_S,
    DayBlocked,
    QuotaLimiter,
    QuotaLimits,
)
from airflow_provider_flex.hooks.quota_errors import QuotaViolation, next_daily_reset, read_quota_violations
from airflow_provider_flex.hooks.retry import Failure
from tests.hooks.conftest import API_KEY, FAST, run_generate

MODES = ["sync", "async"]
MODEL = "gemini-2.5-flash"
WALL = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _violation(quota_id: str, value: str | None = "100", metric: str = "generate_content_paid_tier_requests") -> dict:
    violation = {
        "quotaMetric": f"generativelanguage.googleapis.com/{metric}",
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global", "model": MODEL},
    }
    if value is not None:
        violation["quotaValue"] = value
    return violation


def _quota_failure(*violations: dict) -> dict:
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": list(violations)}


HELP = {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"url": "https://ai.google.dev/gemini-api/docs"}]}
RETRY_2S = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}
PER_MINUTE = _violation("GenerateRequestsPerMinutePerProjectPerModel", "600")
TOKENS_PER_MINUTE = _violation(
    "GenerateContentInputTokensPerModelPerMinute-FreeTier", "250000", "generate_content_free_tier_input_token_count"
)
PER_DAY = _violation("GenerateRequestsPerDayPerProjectPerModel", "1000")


class RecordingPacer(CallPacer):
    def __init__(self) -> None:
        self.failures: list[Failure] = []

    def on_failure(self, failure: Failure) -> None:
        self.failures.append(failure)


# ---- reading 429 bodies


def test_quota_failure_details_are_read_into_violations():
    body = {"error": {"code": 429, "details": [HELP, _quota_failure(PER_MINUTE, TOKENS_PER_MINUTE, PER_DAY), RETRY_2S]}}
    minute, tokens, day = read_quota_violations(body)
    assert (minute.window, minute.unit, minute.limit, minute.model, minute.location) == (
        "minute",
        "requests",
        600,
        MODEL,
        "global",
    )
    assert (tokens.window, tokens.unit, tokens.limit, tokens.name) == (
        "minute",
        "tokens",
        250000,
        "input tokens per minute",
    )
    assert (day.window, day.daily, day.limit, day.name) == ("day", True, 1000, "requests per day")


@pytest.mark.parametrize(
    "details",
    [[], [HELP], [RETRY_2S], [{"@type": "type.googleapis.com/google.rpc.QuotaFailure"}], "not a list"],
)
def test_bodies_without_a_quota_failure_name_no_quota(details):
    assert read_quota_violations({"error": {"code": 429, "details": details}}) == ()
    assert read_quota_violations("Resource has been exhausted (e.g. check quota).") == ()


def test_the_quota_day_resets_at_midnight_pacific_standard_and_daylight():
    assert next_daily_reset(datetime(2026, 11, 28, 7, 59, 59, tzinfo=UTC)) == datetime(2026, 11, 28, 8, tzinfo=UTC)
    assert next_daily_reset(datetime(2026, 11, 28, 8, 0, 1, tzinfo=UTC)) == datetime(2026, 11, 29, 8, tzinfo=UTC)
    assert next_daily_reset(datetime(2026, 7, 1, 12, tzinfo=UTC)) == datetime(2026, 7, 2, 7, tzinfo=UTC)  # PDT


# ---- each 429 shape through the real hook over HTTP


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("details", "expected_quotas"),
    [
        ([_quota_failure(PER_MINUTE), HELP, RETRY_2S], ("GenerateRequestsPerMinutePerProjectPerModel",)),
        ([_quota_failure(TOKENS_PER_MINUTE), RETRY_2S], ("GenerateContentInputTokensPerModelPerMinute-FreeTier",)),
        ([HELP], ()),
        (None, ()),
    ],
    ids=["requests-per-minute", "tokens-per-minute-free-tier", "help-only", "no-details"],
)
def test_retryable_quota_429s_are_read_and_retried(set_connection, mode, details, expected_quotas):
    with FlexEmulator() as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        emulator.admin.inject("http_error", status_code=429, details=details or [], message="quota")
        pacer = RecordingPacer()
        hook = GeminiFlexHook(retry_policy=FAST, pacer=pacer)
        response = run_generate(hook, mode, contents="x", model=MODEL)
    assert response.attempts == 2
    (failure,) = pacer.failures
    assert failure.status_code == 429 and failure.retryable
    assert tuple(q.quota_id for q in failure.quotas) == expected_quotas
    limits = hook.quota_limiter(MODEL).known_limits()
    if expected_quotas and "Tokens" in expected_quotas[0]:
        assert limits == {"tokens_per_minute": (250000, "learned")}
    elif expected_quotas:
        assert limits == {"requests_per_minute": (600, "learned")}
    else:
        assert limits == {}  # nothing to learn from: the engine's fallback pacing handles these


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "details",
    [[_quota_failure(PER_DAY), HELP], [_quota_failure(PER_MINUTE, PER_DAY), HELP, RETRY_2S]],
    ids=["per-day", "minute-and-day"],
)
def test_a_per_day_refusal_is_not_retried_and_blocks_further_calls(set_connection, mode, details):
    with FlexEmulator() as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        emulator.admin.inject("http_error", status_code=429, details=details, message="You exceeded your quota")
        hook = GeminiFlexHook(retry_policy=FAST)
        with pytest.raises(FlexQuotaExhausted) as raised:
            run_generate(hook, mode, contents="x", model=MODEL)
        assert emulator.admin.stats()["api_requests"] == 1
        error = raised.value
        assert (error.model, error.quota_id, error.limit, error.attempts) == (
            MODEL,
            "GenerateRequestsPerDayPerProjectPerModel",
            1000,
            1,
        )
        assert error.reset_at == next_daily_reset(datetime.now(UTC))
        assert f"Daily quota exhausted for model {MODEL}: requests per day" in str(error)
        assert "PST" in str(error) or "PDT" in str(error)
        # every other call of this process for the model now fails at once, without a request
        with pytest.raises(FlexQuotaExhausted):
            run_generate(GeminiFlexHook(retry_policy=FAST), mode, contents="y", model=MODEL)
        assert emulator.admin.stats()["api_requests"] == 1
        # another model has its own quota
        assert run_generate(hook, mode, contents="z", model="gemini-2.5-pro").text


def test_quota_exhausted_crosses_a_trigger_event_as_itself():
    error = FlexQuotaExhausted(
        model=MODEL,
        quota_id="GenerateRequestsPerDayPerProjectPerModel",
        quota="requests per day",
        limit=1000,
        reset_at=datetime(2026, 11, 29, 8, tzinfo=UTC),
        attempts=1,
        waited_s=0.1,
    )
    again = error_from_payload(error_payload(error))
    assert isinstance(again, FlexQuotaExhausted)
    assert (again.model, again.limit, again.reset_at, str(again)[:60]) == (
        MODEL,
        1000,
        error.reset_at,
        str(error)[:60],
    )


# ---- pacing to known quotas


def test_configured_quotas_come_from_the_connection_and_the_hook_overrides_them(set_connection):
    extra = {"quotas": {MODEL: {"requests_per_minute": 120, "requests_per_day": 5000}, "*": {"tokens_per_minute": 9}}}
    set_connection(host="http://127.0.0.1:1", password=API_KEY, extra=extra)
    assert GeminiFlexHook().quota_limiter(MODEL).known_limits() == {
        "requests_per_minute": (120, "configured"),
    }
    assert GeminiFlexHook().quota_limiter("gemini-2.5-pro").known_limits() == {"tokens_per_minute": (9, "configured")}
    overridden = GeminiFlexHook(quotas={"requests_per_minute": 60}).quota_limiter(MODEL)
    assert overridden.known_limits()["requests_per_minute"] == (60, "configured")
    assert overridden.requests_per_day == 5000


@pytest.mark.parametrize(
    ("quotas", "message"),
    [
        ("{not json", "extra quotas is not valid JSON"),
        ([1, 2], "must be a JSON object of model id"),
        ({MODEL: {"requests_per_minute": -3}}, "requests_per_minute must be a whole number >= 1, got -3"),
        ({MODEL: {"rpm": 3}}, "unknown field(s) ['rpm']"),
    ],
)
def test_bad_quota_extras_fail_naming_the_connection_and_field(set_connection, quotas, message):
    set_connection(host="http://127.0.0.1:1", password=API_KEY, extra={"quotas": quotas})
    with pytest.raises(ValueError, match="connection 'gemini_flex_default'") as raised:
        GeminiFlexHook().settings  # noqa: B018
    assert message in str(raised.value)


def test_calls_are_paced_evenly_to_a_configured_quota_with_no_429(set_connection):
    with FlexEmulator(rpm=600) as emulator:
        set_connection(
            host=emulator.base_url, password=API_KEY, extra={"quotas": {MODEL: {"requests_per_minute": 600}}}
        )
        hook = GeminiFlexHook(retry_policy=FAST)

        async def burst() -> list[float]:
            async def one(i: int) -> float:
                await hook.agenerate_content(contents=f"row {i}", model=MODEL)
                return time.monotonic()

            return await asyncio.gather(*[one(i) for i in range(12)])

        started = time.monotonic()
        asyncio.run(burst())
        elapsed = time.monotonic() - started
        stats = emulator.admin.stats()
    assert stats["quota_refusals"] == {}
    assert elapsed >= 11 * 0.1 * 0.95  # 12 starts 0.1 s apart: smooth, not a burst at the top of the minute


def test_a_per_second_quota_is_learned_from_its_quota_value(set_connection):
    with FlexEmulator(rps=5) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        hook = GeminiFlexHook(retry_policy=FAST)

        async def burst() -> None:
            await asyncio.gather(*[hook.agenerate_content(contents=f"row {i}", model=MODEL) for i in range(20)])

        asyncio.run(burst())
        refusals = emulator.admin.stats()["quota_refusals"]
    assert hook.quota_limiter(MODEL).paces["requests_per_second"].limit == 5
    assert refusals.get("GenerateRequestsPerSecondPerProject", 0) < 20  # learned once, then paced


# ---- the limiter's decisions, with a clock of our own


def test_starts_are_spaced_evenly_not_burst():
    limiter = QuotaLimiter(MODEL, QuotaLimits(requests_per_minute=60))
    starts = [limiter.reserve("x", now=0.0, wall=WALL).start for _ in range(5)]  # type: ignore[union-attr]
    assert starts == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_learned_limit_accounts_for_the_starts_before_it_was_known():
    limiter = QuotaLimiter(MODEL)
    for i in range(10):  # unknown quota: nothing held back, but every start is logged
        assert limiter.reserve("x", now=i * 0.1, wall=WALL).start == i * 0.1  # type: ignore[union-attr]
    violation = QuotaViolation("GenerateRequestsPerMinutePerProjectPerModel", window="minute", limit=10)
    refused = limiter.reserve("x", now=1.0, wall=WALL)
    limiter.on_refused(refused, (violation,), 5.0, now=1.0, wall=WALL)  # type: ignore[arg-type]
    nxt = limiter.reserve("x", now=1.0, wall=WALL)
    assert nxt.start == pytest.approx(60.0, abs=0.05)  # type: ignore[union-attr]  # the first start leaves the window


def test_a_server_pause_holds_every_start():
    limiter = QuotaLimiter(MODEL)
    violation = QuotaViolation("GenerateRequestsPerMinutePerProjectPerModel", window="minute", limit=None)
    limiter.on_refused(None, (violation,), 26.0, now=100.0, wall=WALL)
    assert limiter.reserve("x", now=101.0, wall=WALL).start == 126.0  # type: ignore[union-attr]


def test_a_spent_day_blocks_until_the_reset_and_is_looked_at_again():
    limiter = QuotaLimiter(MODEL)
    day = QuotaViolation("GenerateRequestsPerDayPerProjectPerModel", window="day", limit=1000)
    blocked = limiter.on_refused(None, (day,), None, now=0.0, wall=WALL)
    assert isinstance(blocked, DayBlocked) and blocked.reset_at == datetime(2026, 11, 29, 8, tzinfo=UTC)
    assert isinstance(limiter.reserve("x", now=10.0, wall=WALL), DayBlocked)
    assert not isinstance(limiter.reserve("x", now=DAY_BLOCK_RECHECK_S + 1, wall=WALL), DayBlocked)
    limiter.on_refused(None, (day,), None, now=0.0, wall=WALL)
    after_reset = blocked.reset_at + timedelta(seconds=1)
    assert not isinstance(limiter.reserve("x", now=10.0, wall=after_reset), DayBlocked)
    limiter.on_refused(None, (day,), None, now=0.0, wall=WALL)
    limiter.clear_day_block()
    assert not isinstance(limiter.reserve("x", now=10.0, wall=WALL), DayBlocked)


def test_a_configured_daily_quota_stops_calls_before_the_server_must():
    limiter = QuotaLimiter(MODEL, QuotaLimits(requests_per_day=3))
    for i in range(3):
        assert not isinstance(limiter.reserve("x", now=float(i), wall=WALL), DayBlocked)
    blocked = limiter.reserve("x", now=4.0, wall=WALL)
    assert isinstance(blocked, DayBlocked) and blocked.quota.limit == 3
    assert not isinstance(limiter.reserve("x", now=5.0, wall=blocked.reset_at), DayBlocked)  # a new day


def test_token_estimates_are_corrected_from_usage_and_the_ratio_learned():
    limiter = QuotaLimiter(MODEL, QuotaLimits(tokens_per_minute=1000))
    prompt = "word " * 100  # 500 characters
    first = limiter.reserve(prompt, now=0.0, wall=WALL)
    assert first.tokens == 150  # type: ignore[union-attr]  # 0.3 tokens per character before any answer
    limiter.correct_tokens(first, 100)  # type: ignore[arg-type]
    assert limiter.paces["tokens_per_minute"].total == 100
    assert limiter.tokens_per_char < 0.3
    for _ in range(30):
        limiter.correct_tokens(limiter.reserve(prompt, now=0.0, wall=WALL), 100)  # type: ignore[arg-type]
    assert limiter.estimate_tokens(prompt)[0] == pytest.approx(100, abs=3)


@settings(max_examples=200, deadline=None)
@given(
    rpm=st.integers(1, 50),
    tpm=st.integers(50, 500),
    calls=st.lists(
        st.tuples(st.floats(0, 30), st.integers(1, 40), st.floats(0, 1), st.booleans()), min_size=1, max_size=120
    ),
)
def test_the_limiter_never_lets_more_than_the_quota_into_any_window(rpm, tpm, calls):
    """Requests and input tokens started in any 60 s window stay within the quota, fixed or sliding.

    Answers here count at most the estimate (an answer counting more than estimated
    pushes later starts back instead); refused calls are refunded, as the server
    does not count them.
    """
    limiter = QuotaLimiter(MODEL, QuotaLimits(requests_per_minute=rpm, tokens_per_minute=tpm))
    now = 0.0
    started: list[tuple[float, int]] = []
    for gap, chars, counted, refused in calls:
        now += gap
        reservation = limiter.reserve("x" * chars, now=now, wall=WALL)
        assert not isinstance(reservation, DayBlocked)
        assert reservation.start >= now
        if refused:
            limiter.on_refused(reservation, (), None, now=reservation.start, wall=WALL)
            continue
        tokens = max(1, int(reservation.tokens * counted))
        limiter.correct_tokens(reservation, tokens)
        started.append((reservation.start, tokens))
    for begin, _ in started:  # the worst windows start at a start
        inside = [tokens for at, tokens in started if begin <= at < begin + 60.0]
        assert len(inside) <= rpm
        assert sum(inside) <= max(tpm, max(inside))  # a lone request over the quota may pass in an empty window
