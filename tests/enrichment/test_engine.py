"""The engine's decisions as small pure pieces: the call limit and the shared backoff step."""

from __future__ import annotations

import pytest

from airflow_provider_flex.enrichment.engine import Enrichment
from airflow_provider_flex.enrichment.pacing import OUTAGE_WINDOW, AdaptiveLimit, EnrichmentPacer
from airflow_provider_flex.enrichment.records import PromptTemplate
from airflow_provider_flex.enrichment.store import OutputStore
from airflow_provider_flex.hooks.gemini_flex import Failure, GeminiFlexHook
from airflow_provider_flex.hooks.quota import QuotaLimiter, QuotaLimits, QuotaViolation

SHED = Failure(True, 503, "UNAVAILABLE", "overloaded")
RATE_LIMITED = Failure(True, 429, "RESOURCE_EXHAUSTED", "quota", server_delay_s=0.5)


def test_429s_cut_the_limit_once_per_window_and_pause_new_calls():
    limit = AdaptiveLimit(maximum=32, current=20)
    for _ in range(10):  # a burst of 429s from calls that were all in flight together
        limit.on_failure(RATE_LIMITED, now=100.0)
    assert limit.allowed == 14  # one 30% cut, not 0.7 ** 10
    assert limit.paused_until == 100.5
    for _ in range(14):
        limit.on_success()
    limit.on_failure(RATE_LIMITED, now=200.0)
    assert limit.allowed < 14  # a new window: cut again


def test_a_429_sets_the_start_rate_to_90_percent_of_what_was_seen_and_successes_grow_it():
    limit = AdaptiveLimit(maximum=32, current=20)
    for i in range(20):  # 20 calls started within the last second, unpaced until now
        assert limit.wait_before_start(10.0 + i * 0.04) == 0.0
        limit.record_start(10.0 + i * 0.04)
    limit.on_failure(Failure(True, 429, "RESOURCE_EXHAUSTED", "quota"), now=10.8)
    assert limit.max_rate == 18.0
    wait = limit.wait_before_start(10.8)  # 20 starts in the window already: wait for it to slide
    assert 0 < wait <= 1.0
    assert limit.wait_before_start(10.0 + 1.0 + 2 * 0.04 + 1e-6) == 0.0  # 17 left in the window
    for _ in range(18):
        limit.on_success()
    assert 18.9 < limit.max_rate < 19.1


def test_503s_do_not_shrink_the_limit():
    limit = AdaptiveLimit(maximum=32, current=20)
    for _ in range(50):
        limit.on_failure(SHED, now=0.0)
    assert limit.allowed == 20 and limit.paused_until == 0.0 and limit.max_rate is None


def test_successes_grow_the_limit_by_about_one_per_window_up_to_the_cap():
    limit = AdaptiveLimit(maximum=6, current=4)
    for _ in range(4):
        limit.on_success()
    assert limit.allowed == 4 and limit.current > 4.9
    for _ in range(100):
        limit.on_success()
    assert limit.allowed == 6


def test_backoff_follows_the_runs_health_not_a_rows_bad_luck():
    pacer = EnrichmentPacer(max_concurrency=4)
    # random shedding: a row failing six times among answered calls keeps the first step
    for _ in range(10):
        pacer.on_failure(SHED)
        pacer.on_success()
    assert not pacer.outage and pacer.backoff_step(6) == 1
    # alone in the tail of a run, one row failing again and again is still bad luck
    for _ in range(OUTAGE_WINDOW - 1):
        pacer.on_failure(SHED)
    assert pacer.backoff_step(6) == 1
    # an outage: no recent call answered, so each row backs off as far as its own attempts
    pacer.on_failure(SHED)
    assert pacer.outage and pacer.backoff_step(6) == 6
    # 429s with a retryDelay are about our rate and are waited exactly; they say nothing of the API's health
    pacer.on_success()
    for _ in range(50):
        pacer.on_failure(RATE_LIMITED)
    assert not pacer.outage


def test_a_known_quota_paces_retries_so_a_shed_call_needs_no_backoff_of_its_own():
    pacer = EnrichmentPacer(max_concurrency=4)
    pacer.watch_quota(QuotaLimiter("gemini-2.5-flash", QuotaLimits(requests_per_minute=600)))
    pacer.on_failure(SHED)
    assert pacer.backoff_step(3) == 0
    for _ in range(OUTAGE_WINDOW):
        pacer.on_failure(SHED)
    assert pacer.backoff_step(3) == 3


def test_a_429_naming_its_quota_limit_is_left_to_the_quota_limiter():
    limit = AdaptiveLimit(maximum=32, current=20)
    quota = QuotaViolation("GenerateRequestsPerMinutePerProjectPerModel", window="minute", limit=600)
    limit.on_failure(Failure(True, 429, "RESOURCE_EXHAUSTED", "quota", server_delay_s=2.0, quotas=(quota,)), now=5.0)
    assert limit.allowed == 20 and limit.max_rate is None  # no cut, no learned start rate
    assert limit.paused_until == 7.0  # but the server's pause holds


def test_the_engine_refuses_a_hook_without_its_pacer(tmp_path):
    with pytest.raises(ValueError, match="pacer"):
        Enrichment(
            hook=GeminiFlexHook("unused"),
            pacer=EnrichmentPacer(4),
            store=OutputStore(str(tmp_path)),
            template=PromptTemplate("{{ row.x }}"),
            key_field="id",
            model=None,
            config={},
            service_tier="flex",
            max_cost_usd=None,
            log=None,
        )
