"""The engine's decisions as small pure pieces: the call limit and the shared backoff step."""

from __future__ import annotations

import itertools

import pytest

from airflow_provider_flex.enrichment.engine import Enrichment
from airflow_provider_flex.enrichment.pacing import OUTAGE_WINDOW, AdaptiveLimit, EnrichmentPacer
from airflow_provider_flex.enrichment.records import PromptTemplate
from airflow_provider_flex.enrichment.request import EnrichRequest
from airflow_provider_flex.enrichment.store import OutputStore
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.hooks.pacing import RATE_PLATEAU, RATE_RECOVERY_S
from airflow_provider_flex.hooks.quota import QuotaLimiter, QuotaLimits, QuotaViolation
from airflow_provider_flex.hooks.retry import Failure

SHED = Failure(True, 503, "UNAVAILABLE", "overloaded")
RATE_LIMITED = Failure(True, 429, "RESOURCE_EXHAUSTED", "quota", server_delay_s=0.5)


def test_429s_without_a_named_limit_pace_starts_once_per_second_and_pause_new_calls():
    limit = AdaptiveLimit(maximum=32, current=20)
    for i in range(20):  # 20 calls started within the last second, unpaced until now
        limit.record_start(99.2 + i * 0.04)
    for _ in range(10):  # a burst of 429s from calls that were all in flight together: one cut
        limit.on_failure(RATE_LIMITED, now=100.0)
    assert limit.max_rate == pytest.approx(18.0)
    assert limit.allowed == 20, "calls in flight are not the quota: only the start rate is cut"
    assert limit.paused_until == 100.5
    assert limit.wait_before_start(100.2) == pytest.approx(0.3)
    limit.on_failure(RATE_LIMITED, now=100.5)  # still within the second of the cut: no second cut
    assert limit.max_rate == pytest.approx(18.0)


def test_the_learned_rate_spaces_starts_evenly_and_grows_back_slowly_like_tcp():
    limit = AdaptiveLimit(maximum=32, current=20)
    for i in range(20):
        limit.record_start(10.0 + i * 0.04)
    limit.on_failure(Failure(True, 429, "RESOURCE_EXHAUSTED", "quota"), now=10.8)
    starts = [limit.reserve_start(10.8) for _ in range(5)]  # five callers at once: five distinct turns
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert starts[0] == 10.8 and all(gap == pytest.approx(1 / 18, rel=0.01) for gap in gaps)
    limit.reserve_start(10.8 + RATE_RECOVERY_S / 2)  # quickly back near the rate that drew the 429 (20/s)...
    assert 20.0 * 0.95 < limit.max_rate < 20.0 * RATE_PLATEAU
    limit.reserve_start(10.8 + RATE_RECOVERY_S)  # ...flat just under it, like TCP CUBIC's window...
    assert limit.max_rate == pytest.approx(20.0 * RATE_PLATEAU)
    limit.reserve_start(10.8 + 3 * RATE_RECOVERY_S)  # ...then past it, faster and faster: a limit that rose is found
    assert limit.max_rate > 20.0 * 1.2
    limit.on_failure(Failure(True, 429, "RESOURCE_EXHAUSTED", "quota"), now=21.0)
    assert limit.max_rate < 18.0 * 1.3 * 0.91, "the next 429 cuts it again"


def test_a_429_that_names_its_limit_is_left_to_the_quota_limiter():
    limit = AdaptiveLimit(maximum=32, current=20)
    named = Failure(True, 429, "RESOURCE_EXHAUSTED", "quota", quotas=(QuotaViolation("PerMinute", limit=60),))
    limit.on_failure(named, now=1.0)
    assert limit.max_rate is None and limit.reserve_start(1.0) == 1.0


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
            EnrichRequest(
                task="Task 't'", key_field="id", template=PromptTemplate("{{ row.x }}"), output_path=str(tmp_path)
            ),
            hook=GeminiFlexHook("unused"),
            pacer=EnrichmentPacer(4),
            store=OutputStore(str(tmp_path)),
            log=None,
        )
