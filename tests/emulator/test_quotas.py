"""The emulator's Gemini quotas: per minute and per day, per project (API key) and per model, Gemini's 429 bodies."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from google.genai import errors

from airflow_provider_flex.emulator.quotas import ModelQuota, QuotaBook, QuotaExceeded

FLASH = "gemini-2.5-flash"
PRO = "gemini-2.5-pro"


def _refuse(client, model: str = FLASH, contents: str = "x") -> dict:
    with pytest.raises(errors.ClientError) as raised:
        client.models.generate_content(model=model, contents=contents, config={"service_tier": "flex"})
    assert (raised.value.code, raised.value.status) == (429, "RESOURCE_EXHAUSTED")
    return raised.value.details["error"]


def _detail(error: dict, kind: str) -> dict | None:
    found = [d for d in error.get("details", []) if d["@type"] == f"type.googleapis.com/google.rpc.{kind}"]
    return found[0] if found else None


def _call(client, model: str = FLASH, contents: str = "x") -> str:
    return client.models.generate_content(model=model, contents=contents, config={"service_tier": "flex"}).text


def _away_from_a_minute_boundary() -> None:
    """Fixed windows turn at second 00: start a test that fills one window at least 3 s before it turns."""
    left = 60 - time.time() % 60
    if left < 3:
        time.sleep(left + 0.1)


def test_requests_per_minute_fixed_window_answers_gemini_429(start_emulator, make_client):
    emulator = start_emulator(rpm=2)
    client = make_client(emulator)
    _away_from_a_minute_boundary()
    _call(client)
    _call(client)
    error = _refuse(client)
    to_boundary = 60 - time.time() % 60
    assert error["message"].startswith("You exceeded your current quota")
    assert f"limit: 2, model: {FLASH}" in error["message"]
    failure = _detail(error, "QuotaFailure")
    assert failure["violations"] == [
        {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
            "quotaDimensions": {"location": "global", "model": FLASH},
            "quotaValue": "2",
        }
    ]
    assert _detail(error, "Help")["links"][0]["url"] == "https://ai.google.dev/gemini-api/docs/rate-limits"
    delay = _detail(error, "RetryInfo")["retryDelay"]
    assert delay.endswith("s") and delay[:-1].isdigit()  # whole seconds, as the API sends
    assert abs(int(delay[:-1]) - to_boundary) <= 1.5  # until the minute turns
    assert emulator.admin.stats()["quota_refusals"] == {"GenerateRequestsPerMinutePerProjectPerModel": 1}


def test_requests_per_minute_sliding_window_waits_for_the_oldest_request(start_emulator, make_client):
    emulator = start_emulator(rpm=2, quota_window="sliding")
    client = make_client(emulator)
    _call(client)
    _call(client)
    delay = _detail(_refuse(client), "RetryInfo")["retryDelay"]
    assert 55 <= int(delay[:-1]) <= 60


def test_quotas_are_per_model_and_per_api_key(start_emulator, make_client):
    emulator = start_emulator(rpm=1)
    client = make_client(emulator)
    _away_from_a_minute_boundary()
    _call(client, FLASH)
    _refuse(client, FLASH)
    assert _call(client, PRO)  # another model has its own quota
    assert _call(make_client(emulator, api_key="another-project"), FLASH)  # another project too


def test_a_model_can_have_its_own_quotas(start_emulator, make_client):
    emulator = start_emulator(quotas=((PRO, ModelQuota(rpm=1)),))
    client = make_client(emulator)
    _away_from_a_minute_boundary()
    _call(client, PRO)
    error = _refuse(client, PRO)
    assert _detail(error, "QuotaFailure")["violations"][0]["quotaValue"] == "1"
    assert all(_call(client, FLASH) for _ in range(5))  # unlimited by default


def test_input_tokens_per_minute_counts_prompt_tokens_only(start_emulator, make_client):
    emulator = start_emulator(tpm=10, answer_tokens=(50, 50))
    client = make_client(emulator)
    _away_from_a_minute_boundary()
    _call(client, contents="one two three four five six")  # 6 prompt tokens; the 50-token answer does not count
    error = _refuse(client, contents="one two three four five six")
    violation = _detail(error, "QuotaFailure")["violations"][0]
    assert violation["quotaId"] == "GenerateContentInputTokensPerModelPerMinute"
    assert violation["quotaMetric"].endswith("_input_token_count")
    assert violation["quotaValue"] == "10"
    assert _detail(error, "RetryInfo") is not None
    assert _call(client, contents="one two three")  # 6 + 3 <= 10


def test_requests_per_day_has_no_retry_info_and_ends_with_the_day(start_emulator, make_client):
    emulator = start_emulator(rpd=2)
    client = make_client(emulator)
    _call(client)
    _call(client)
    error = _refuse(client)
    violation = _detail(error, "QuotaFailure")["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel"
    assert _detail(error, "RetryInfo") is None  # nothing helps before the reset
    assert "Please retry" not in error["message"]
    _refuse(client)
    emulator.admin.end_day()
    assert _call(client)
    assert emulator.admin.stats()["quota_refusals"] == {"GenerateRequestsPerDayPerProjectPerModel": 2}


def test_one_429_lists_every_quota_it_breaks(start_emulator, make_client):
    emulator = start_emulator(rpm=1, rpd=1)
    client = make_client(emulator)
    _away_from_a_minute_boundary()
    _call(client)
    error = _refuse(client)
    ids = [v["quotaId"] for v in _detail(error, "QuotaFailure")["violations"]]
    assert ids == ["GenerateRequestsPerMinutePerProjectPerModel", "GenerateRequestsPerDayPerProjectPerModel"]
    assert _detail(error, "RetryInfo") is None  # the day decides: waiting a minute does not help


def test_per_second_burst_limit_answers_in_milliseconds(start_emulator, make_client):
    emulator = start_emulator(rps=2)
    client = make_client(emulator)
    _call(client)
    _call(client)
    error = _refuse(client)
    violation = _detail(error, "QuotaFailure")["violations"][0]
    assert (violation["quotaId"], violation["quotaValue"]) == ("GenerateRequestsPerSecondPerProject", "2")
    delay = float(_detail(error, "RetryInfo")["retryDelay"].removesuffix("s"))
    assert 0 < delay <= 1.0
    time.sleep(delay)
    assert _call(client)


def test_refused_requests_are_not_counted(start_emulator, make_client):
    emulator = start_emulator(rps=1, rpd=3)
    client = make_client(emulator)
    _call(client)
    _refuse(client)  # over the per-second limit: not counted against the day
    time.sleep(1.05)
    _call(client)
    time.sleep(1.05)
    _call(client)
    error = _refuse(client)
    assert [v["quotaId"] for v in _detail(error, "QuotaFailure")["violations"]][-1].startswith("GenerateRequestsPerDay")


# ---- the book's windows against a clock of our own


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _book(clock: Clock, window: str = "fixed", **quota: int) -> QuotaBook:
    return QuotaBook(default=ModelQuota(**quota), per_model={}, window=window, clock=clock)


def test_fixed_minute_windows_turn_at_second_zero():
    clock = Clock(1_800_000_000 + 50.0)  # 50 s into a minute
    book = _book(clock, rpm=2)
    book.admit("k", FLASH, 1)
    book.admit("k", FLASH, 1)
    with pytest.raises(QuotaExceeded) as raised:
        book.admit("k", FLASH, 1)
    assert raised.value.retry_delay_s == pytest.approx(10.0)
    clock.now += 10.0  # second 00 of the next minute
    book.admit("k", FLASH, 1)


def test_sliding_minute_windows_free_a_request_60_s_after_it():
    clock = Clock(1_800_000_000 + 50.0)
    book = _book(clock, window="sliding", rpm=2)
    book.admit("k", FLASH, 1)
    clock.now += 5
    book.admit("k", FLASH, 1)
    clock.now += 10  # the minute turned, but both requests are in the last 60 s
    with pytest.raises(QuotaExceeded) as raised:
        book.admit("k", FLASH, 1)
    assert raised.value.retry_delay_s == pytest.approx(45.0)
    clock.now += 45.0
    book.admit("k", FLASH, 1)


def test_the_day_turns_at_midnight_in_los_angeles():
    before_midnight_pst = datetime(2026, 11, 28, 7, 59, 59, tzinfo=UTC).timestamp()  # 23:59:59 PST
    clock = Clock(before_midnight_pst)
    book = _book(clock, rpd=1)
    book.admit("k", FLASH, 1)
    with pytest.raises(QuotaExceeded):
        book.admit("k", FLASH, 1)
    clock.now += 2  # 00:00:01 PST: a new quota day (while it is 08:00 in UTC)
    book.admit("k", FLASH, 1)


def test_a_request_over_the_token_quota_passes_alone_in_an_empty_window():
    book = _book(Clock(1_800_000_000.0), tpm=10)
    book.admit("k", FLASH, 50)
    with pytest.raises(QuotaExceeded):
        book.admit("k", FLASH, 1)


@pytest.mark.parametrize(
    ("details", "types_seen"),
    [
        ("full", {"QuotaFailure", "Help", "RetryInfo"}),
        ("retry-only", {"RetryInfo"}),
        ("none", set()),
    ],
)
def test_a_quota_429_carries_the_details_it_is_set_to(start_emulator, make_client, details, types_seen):
    emulator = start_emulator(rpm=1, quota_details=details)
    client = make_client(emulator)
    client.models.generate_content(model="gemini-2.5-flash", contents="first")
    with pytest.raises(errors.ClientError) as refused:
        client.models.generate_content(model="gemini-2.5-flash", contents="second")
    error = refused.value.details["error"]
    assert refused.value.code == 429 and error["status"] == "RESOURCE_EXHAUSTED"
    assert {d["@type"].rsplit(".", 1)[-1] for d in error.get("details", [])} == types_seen
    if details == "none":
        assert error["message"] == "Resource has been exhausted (e.g. check quota)."
