"""Triggers pacing through a Redis quota keep the triggerer's loop free, with Redis up and with Redis stalled.

Every Redis operation (the client's creation, reservations, corrections, what a 429 teaches) is
watched for the thread it runs on: none may run on the event loop's thread, where a stalled
Redis (SIGSTOP: connections accepted, nothing answered) would hold every trigger for its timeout.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading

import pytest

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.hooks import shared_quota
from airflow_provider_flex.process_state import PROCESS
from airflow_provider_flex.triggers.gemini_flex import GeminiFlexGenerateContentTrigger
from tests.hooks.conftest import API_KEY
from tests.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path):
    with RedisServer(tmp_path) as server:
        yield server


def test_triggers_with_a_redis_quota_never_touch_redis_on_the_loop_even_when_it_stalls(
    redis_server, set_connection, monkeypatch
):
    threads: list[tuple[str, int]] = []
    for name in ("reserve", "adjust", "learn"):
        real = getattr(shared_quota.RedisQuotaState, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            threads.append((_name, threading.get_ident()))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(shared_quota.RedisQuotaState, name, spy)
    real_client = shared_quota.redis_client

    def client_spy(conn_id):
        threads.append(("client", threading.get_ident()))
        return real_client(conn_id)

    monkeypatch.setattr(shared_quota, "redis_client", client_spy)
    monkeypatch.setenv("AIRFLOW_CONN_FLEX_REDIS", redis_server.connection_json())

    async def calls(count: int, loop_thread: list[int], lag: list[float]) -> list[str]:
        loop_thread.append(threading.get_ident())
        loop = asyncio.get_running_loop()

        async def watch() -> None:
            while True:
                before = loop.time()
                await asyncio.sleep(0.01)
                lag.append(loop.time() - before - 0.01)

        watcher = asyncio.create_task(watch())
        triggers = [GeminiFlexGenerateContentTrigger(contents=f"call {i}") for i in range(count)]
        events = await asyncio.gather(*(anext(trigger.run()) for trigger in triggers))
        watcher.cancel()
        return [event.payload["status"] for event in events]

    with FlexEmulator(seed=1, rpm=6000, quota_window="sliding") as emulator:
        set_connection(
            host=emulator.base_url,
            password=API_KEY,
            extra=json.dumps(
                {"rate_limit_redis_conn_id": "flex_redis", "quotas": {"*": {"requests_per_minute": 6000}}}
            ),
        )
        loop_threads: list[int] = []
        up_lag: list[float] = []
        assert asyncio.run(calls(6, loop_threads, up_lag)) == ["success"] * 6
        assert {name for name, _ in threads} >= {"client", "reserve"}, "the quota really went through Redis"

        redis_server.process.send_signal(signal.SIGSTOP)  # stalled: accepts, never answers
        try:
            stalled_lag: list[float] = []
            assert asyncio.run(calls(8, loop_threads, stalled_lag)) == ["success"] * 8
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        links = list(PROCESS.shared_links.values())
    assert links and all(link.worked and link.down_since is not None for link in links), "the stall was felt"
    on_loop = [name for name, ident in threads if ident in loop_threads]
    assert on_loop == [], f"Redis operations ran on the event loop's thread: {on_loop}"
    # (Wall-clock lag is not asserted: a busy machine stretches it; the thread of every Redis operation is
    # the proof that none waited on the loop.)
