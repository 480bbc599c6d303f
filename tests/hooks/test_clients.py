"""What every call of a process shares: one client per key and endpoint, and one call start per loop pass."""

from __future__ import annotations

import asyncio

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.hooks.pacing import wait_for_loop_pass
from airflow_provider_flex.hooks.request import as_generate_config
from airflow_provider_flex.process_state import PROCESS, freeze_startup_heap_once
from airflow_provider_flex.triggers.gemini_flex import GeminiFlexGenerateContentTrigger
from tests.hooks.conftest import API_KEY


def test_hooks_of_one_key_and_endpoint_share_one_client(set_connection):
    set_connection("flex_a", host="http://127.0.0.1:1", password=API_KEY)
    set_connection("flex_b", host="http://127.0.0.1:1", password=API_KEY)
    set_connection("flex_c", host="http://127.0.0.1:1", password="another-key")
    set_connection("flex_d", host="http://127.0.0.1:2", password=API_KEY)
    a, b = GeminiFlexHook("flex_a").client, GeminiFlexHook("flex_b").client
    assert a is b
    assert GeminiFlexHook("flex_c").client is not a  # another project
    assert GeminiFlexHook("flex_d").client is not a  # another endpoint


def test_equal_configs_are_validated_once_and_shared():
    config = {"system_instruction": "Grade it.", "response_mime_type": "application/json"}
    assert as_generate_config(dict(config)) is as_generate_config(dict(config))
    assert as_generate_config({**config, "temperature": 0.1}) is not as_generate_config(config)


def test_call_starts_are_spread_one_per_loop_pass():
    async def main() -> list[int]:
        passes = 0
        stop = False

        async def count_passes() -> None:
            nonlocal passes
            while not stop:
                passes += 1
                await asyncio.sleep(0)

        counter = asyncio.create_task(count_passes())
        await asyncio.sleep(0)
        seen: list[int] = []

        async def start() -> None:
            await wait_for_loop_pass()
            seen.append(passes)

        await asyncio.gather(*[start() for _ in range(20)])
        stop = True
        await counter
        return seen

    seen = asyncio.run(main())
    assert len(seen) == 20
    assert len(set(seen)) == 20  # no two starts in the same pass of the loop


def test_more_deferred_calls_than_a_connection_pool_holds_all_reach_the_flex_queue(set_connection):
    """The async transport has no client-side cap: 150 waiting calls are 150 calls in the server's queue."""
    with FlexEmulator(slots=1, service_time=(0.01, 0.01), queue_depth=500) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        holder = emulator.admin.hold_slot(6.0)

        async def main() -> tuple[int, list]:
            triggers = [GeminiFlexGenerateContentTrigger(contents=f"waiting call {i}") for i in range(150)]
            tasks = [asyncio.create_task(anext(t.run())) for t in triggers]
            peak = 0
            while not all(task.done() for task in tasks):
                peak = max(peak, emulator.admin.stats()["queue_depth"]["flex"])
                await asyncio.sleep(0.2)
            return peak, [task.result().payload["status"] for task in tasks]

        peak, statuses = asyncio.run(main())
        holder.join()
    assert statuses == ["success"] * 150
    assert peak == 150


def test_the_triggerer_freezes_its_start_up_objects_only_when_asked(set_connection, emulator, monkeypatch):
    """``[gemini_flex] triggerer_freeze_gc``: the first trigger of the process freezes the heap once,
    after the SDK's one-time objects exist; off (the default), the collector is left as it is."""
    import gc

    set_connection(host=emulator.base_url, password=API_KEY)

    def run_two_triggers() -> list[int]:
        counts = []
        for i in range(2):
            event = asyncio.run(anext(GeminiFlexGenerateContentTrigger(contents=f"call {i}").run()))
            assert event.payload["status"] == "success"
            counts.append(gc.get_freeze_count())
        return counts

    assert gc.get_freeze_count() == 0
    assert run_two_triggers() == [0, 0]
    PROCESS.reset()
    monkeypatch.setenv("AIRFLOW__GEMINI_FLEX__TRIGGERER_FREEZE_GC", "True")
    try:
        frozen_first, frozen_second = run_two_triggers()
        asked_again = freeze_startup_heap_once()
    finally:
        gc.unfreeze()
    assert frozen_first > 10_000  # Airflow's and google-genai's objects
    assert frozen_second <= frozen_first  # the second trigger froze nothing more (frozen objects can still die)
    assert asked_again is False  # once per process, not per trigger


def test_the_mmap_threshold_is_fixed_once_per_process_unless_turned_off(monkeypatch):
    """glibc only: the threshold is set once (mallopt answers 1), not again; the setting turns it off."""
    import sys

    from airflow_provider_flex.process_state import fix_mmap_threshold_once

    expected = sys.platform.startswith("linux")
    assert (fix_mmap_threshold_once(), fix_mmap_threshold_once()) == (expected, False)
    PROCESS.reset()
    monkeypatch.setenv("AIRFLOW__GEMINI_FLEX__FIX_MMAP_THRESHOLD", "False")
    assert fix_mmap_threshold_once() is False
