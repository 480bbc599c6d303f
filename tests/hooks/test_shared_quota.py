"""Quotas shared by every process through a real redis-server: one pace for all, outages ridden out, bad Redis refused."""

from __future__ import annotations

import itertools
import json
import threading
import time
from datetime import UTC, datetime

import pytest

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.hooks.quota import DayBlocked, QuotaLimiter, QuotaLimits, QuotaViolation
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.hooks.shared_quota import RedisQuotaState, SharedQuotaLink
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
from tests.hooks.conftest import API_KEY
from tests.redis_server import RedisServer

MODEL = "gemini-2.5-flash"
WALL = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def redis_server(tmp_path):
    with RedisServer(tmp_path) as server:
        yield server


def _process(server: RedisServer, limits: QuotaLimits) -> QuotaLimiter:
    """A limiter as one worker process holds it, linked to the shared state."""
    limiter = QuotaLimiter(MODEL, limits)
    state = RedisQuotaState(server.client(), redis_conn_id="flex_redis", project="p1", model=MODEL)
    limiter.share_with(SharedQuotaLink(state))
    return limiter


def test_processes_sharing_redis_pace_as_one(redis_server):
    first, second = (_process(redis_server, QuotaLimits(requests_per_minute=600)) for _ in range(2))
    starts = []
    for i in range(20):  # two workers asking at once, alternately: one even pace of 10 per second for both
        limiter = first if i % 2 else second
        starts.append(limiter.reserve("x", now=time.monotonic(), wall=WALL).start)  # type: ignore[union-attr]
    # Starts, not waits: however long the 20 round trips take, the schedule is fixed from the first.
    assert starts[-1] - starts[0] == pytest.approx(1.9, abs=0.1)
    assert all(later - earlier > 0.05 for earlier, later in itertools.pairwise(starts))
    assert first.shared.processes == 2  # type: ignore[union-attr]


def test_a_limit_one_process_learns_paces_the_others(redis_server):
    learner, other = (_process(redis_server, QuotaLimits()) for _ in range(2))
    quota = QuotaViolation("GenerateRequestsPerMinutePerProjectPerModel", window="minute", limit=60)
    refused = learner.reserve("x", now=time.monotonic(), wall=WALL)
    refused_at = time.monotonic()
    learner.on_refused(refused, (quota,), 2.0, now=refused_at, wall=WALL)  # type: ignore[arg-type]
    first = other.reserve("x", now=time.monotonic(), wall=WALL).start - refused_at  # type: ignore[union-attr]
    second = other.reserve("x", now=time.monotonic(), wall=WALL).start - refused_at  # type: ignore[union-attr]
    assert first == pytest.approx(2.0, abs=0.2)  # the server's pause holds every process
    assert second - first == pytest.approx(1.0, abs=0.1)  # then one start a second, the learned 60 a minute


def test_a_spent_day_blocks_every_process(redis_server):
    learner, other = (_process(redis_server, QuotaLimits()) for _ in range(2))
    day = QuotaViolation("GenerateRequestsPerDayPerProjectPerModel", window="day", limit=1000)
    learner.on_refused(None, (day,), None, now=time.monotonic(), wall=WALL)
    assert isinstance(other.reserve("x", now=time.monotonic(), wall=WALL), DayBlocked)


def test_a_configured_daily_quota_is_counted_across_processes(redis_server):
    first, second = (_process(redis_server, QuotaLimits(requests_per_day=3)) for _ in range(2))
    outcomes = [limiter.reserve("x", now=time.monotonic(), wall=WALL) for limiter in (first, second, first, second)]
    assert [isinstance(o, DayBlocked) for o in outcomes] == [False, False, False, True]


def test_keys_name_the_project_by_fingerprint_never_the_key(redis_server, set_connection, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_FLEX_REDIS", redis_server.connection_json())
    set_connection(
        host="http://127.0.0.1:1",
        password=API_KEY,
        extra={"rate_limit_redis_conn_id": "flex_redis", "quotas": {MODEL: {"requests_per_minute": 100}}},
    )
    limiter = GeminiFlexHook().quota_limiter(MODEL)
    limiter.reserve("x", now=time.monotonic(), wall=WALL)
    keys = [key.decode() for key in redis_server.client().keys("*")]
    assert keys and all(key.startswith("flex:quota:") and API_KEY not in key for key in keys)
    values = [redis_server.client().dump(key) for key in keys]
    assert all(API_KEY.encode() not in (value or b"") for value in values)


@pytest.mark.parametrize("problem", ["wrong password", "nothing listening"])
def test_a_bad_redis_fails_the_first_call_clearly_without_its_password(tmp_path, set_connection, monkeypatch, problem):
    with RedisServer(tmp_path, password="the-right-redis-password") as server:
        secret = "a-wrong-redis-password-123"
        conn = json.loads(server.connection_json(password=secret))
        if problem == "nothing listening":
            server.stop()
        monkeypatch.setenv("AIRFLOW_CONN_FLEX_REDIS", json.dumps(conn))
        with FlexEmulator() as emulator:
            set_connection(host=emulator.base_url, password=API_KEY, extra={"rate_limit_redis_conn_id": "flex_redis"})
            with pytest.raises(FlexError) as raised:
                GeminiFlexHook(retry_policy=FlexRetryPolicy(max_attempts=2, deadline=30)).generate_content(
                    contents="x", model=MODEL
                )
            assert emulator.admin.stats()["api_requests"] == 0  # refused before any call
    message = str(raised.value)
    assert "Redis connection 'flex_redis'" in message and "rate_limit_redis_conn_id" in message
    assert secret not in message and "the-right-redis-password" not in message


def test_enrichment_rides_out_redis_going_away_and_coming_back(
    redis_server, set_connection, monkeypatch, times_logged, tmp_path
):
    monkeypatch.setenv("AIRFLOW_CONN_FLEX_REDIS", redis_server.connection_json())
    rows = [{"id": f"r{i:04d}", "text": f"row {i}"} for i in range(240)]
    with FlexEmulator(rpm=1200, slots=8, service_time=(0.01, 0.02)) as emulator:
        set_connection(
            host=emulator.base_url,
            password=API_KEY,
            extra={"quotas": {MODEL: {"requests_per_minute": 1200}}, "initial_delay": 0.05},
        )

        def outage() -> None:  # Redis goes away 3 s in and comes back 3 s later, on the same port
            time.sleep(3)
            redis_server.stop()
            time.sleep(3)
            redis_server.start()

        flaky = threading.Thread(target=outage)
        flaky.start()
        summary = GeminiFlexEnrichOperator(
            task_id="enrich",
            records=rows,
            key_field="id",
            prompt_template="Tag {{ row.text }}",
            output_path=str(tmp_path / "out"),
            model=MODEL,
            rate_limit_redis_conn_id="flex_redis",
        ).execute(context={})
        flaky.join()
        answered = [c["prompt"] for c in emulator.admin.calls() if c["outcome"] == "ok"]
        refusals = emulator.admin.stats()["quota_refusals"]
    assert summary["succeeded"] == 240 and summary["failed"] == 0
    assert len(answered) == 240 == len(set(answered))  # no row lost, none paid twice
    assert refusals == {}
    assert times_logged("pacing alone at 1/1 of each quota") == 1  # one warning, however long Redis is away
    assert times_logged("is back after") == 1
    assert summary["elapsed_s"] > 8  # paced to 20 calls/s, outage or not: 240 rows take 12 s
