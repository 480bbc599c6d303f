"""An enrichment's own context cache (``context_cache="auto"``) and ``shared_contents``, against the emulator.

Costs are compared with the emulator's own bill: its token counters priced with the table, plus the storage
token-hours it counted for the caches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.emulator.batch import BatchSettings
from airflow_provider_flex.enrichment.context_cache import CachePlan, RunCache, cache_ttl, display_name_for, plan_cache
from airflow_provider_flex.enrichment.shared_prompt import SharedPrefix
from airflow_provider_flex.enrichment.store import OutputStore
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
from airflow_provider_flex.pricing import DEFAULT_PRICES, cache_storage_cost, token_cost
from tests.hooks.conftest import API_KEY

FLASH = "gemini-2.5-flash"
LONG_INSTRUCTION = " ".join(f"rule{i} applies." for i in range(700))  # 2,100 tokens
POLICY = FlexRetryPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.5, jitter=0.0, deadline=600)


def _rows(count: int) -> list[dict]:
    return [{"id": f"p{i:04d}", "title": f"product {i}"} for i in range(count)]


def _operator(output: Path, **kwargs) -> GeminiFlexEnrichOperator:
    kwargs.setdefault("records", _rows(30))
    kwargs.setdefault("retry_policy", POLICY)
    kwargs.setdefault("system_instruction", LONG_INSTRUCTION)
    kwargs.setdefault("model", FLASH)
    return GeminiFlexEnrichOperator(
        task_id="enrich", key_field="id", prompt_template="Categorise {{ row.title }}", output_path=str(output),
        **kwargs,
    )  # fmt: skip


def _results(output: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(output.glob("results-*.jsonl")) for line in f.read_text().splitlines()]


def _bill(emulator: FlexEmulator, tier: str = "flex") -> float:
    """Return what the emulator billed: its token counters at the table's prices, and its caches' storage."""
    tokens = emulator.admin.stats()["tokens"][tier]
    calls = token_cost(tokens["prompt"], tokens["output"] + tokens["thoughts"], model=FLASH, tier=tier,
                       cached_tokens=tokens["cached"])  # fmt: skip
    hours = emulator.admin.caches()["storage_token_hours"].get(FLASH, 0.0)
    return calls + hours * DEFAULT_PRICES[FLASH]["standard"].cache_storage / 1_000_000


def test_a_run_makes_one_cache_names_it_in_every_row_and_deletes_it(connection, tmp_path):
    summary = _operator(tmp_path).execute(context={})
    caches = connection.admin.caches()
    tokens = connection.admin.stats()["tokens"]["flex"]
    assert summary["succeeded"] == 30 and caches["created"] == 1 and caches["alive"] == 0
    cache_tokens = caches["caches"][0]["usageMetadata"]["totalTokenCount"]
    assert tokens["cached"] == summary["cached_tokens"] == 30 * cache_tokens, "every row named the cache"
    assert summary["context_cache"]["made"] and summary["context_cache"]["shared_tokens"] >= 2100
    assert summary["cache_storage_usd"] > 0
    assert summary["cost_usd"] == pytest.approx(_bill(connection), abs=2e-6), "the reported cost is the bill"
    assert not (tmp_path / "context_cache.json").exists()
    assert caches["caches"][0]["displayName"] == display_name_for(str(tmp_path))


def test_off_makes_no_cache_and_too_few_rows_do_not_pay_for_one(connection, tmp_path):
    off = _operator(tmp_path / "off", context_cache="off").execute(context={})
    few = _operator(tmp_path / "few", records=_rows(1)).execute(context={})
    assert connection.admin.caches()["created"] == 0
    assert off["context_cache"]["reason"] == "context_cache='off'" and "would save" in few["context_cache"]["reason"]
    assert off["cached_tokens"] > 0, "the instruction stays first, so the implicit cache serves it"


def test_shared_contents_go_first_and_are_cached_with_the_instruction(connection, tmp_path):
    glossary = tmp_path / "glossary.md"
    glossary.write_text(" ".join(f"term{i} means thing{i}." for i in range(400)))
    summary = _operator(
        tmp_path / "out",
        system_instruction="Categorise products.",
        shared_contents=["Glossary:", {"file": str(glossary)}],
    ).execute(context={})
    cache = connection.admin.caches()["caches"][0]
    assert summary["context_cache"]["made"] and cache["usageMetadata"]["totalTokenCount"] >= 1600
    calls = connection.admin.calls()
    flex_calls = [c for c in calls if c["method"] == "generate"]
    assert len(flex_calls) == 30 and all(c["prompt"].startswith("Categorise products.\nGlossary:") for c in flex_calls)


def test_bad_input_fails_before_any_call(connection, tmp_path):
    with pytest.raises(ValueError, match=r"Task 'enrich': context_cache must be one of \['auto', 'off'\], got 'on'"):
        _operator(tmp_path, context_cache="on")
    missing = tmp_path / "nowhere.txt"
    with pytest.raises(ValueError, match=r"shared_contents\[1\]: file .*nowhere.txt' does not exist"):
        _operator(tmp_path / "out", shared_contents=["x", {"file": str(missing)}]).execute(context={})
    stats = connection.admin.stats()
    assert stats["api_requests"] == 0 and connection.admin.caches()["created"] == 0
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_cache_the_api_refuses_leaves_the_run_uncached_with_one_warning(connection, tmp_path, times_logged):
    summary = _operator(tmp_path, model="gemini-2.5-flash-image").execute(context={})
    assert summary["succeeded"] == 30 and connection.admin.caches()["created"] == 0
    assert "does not support cached content" in summary["context_cache"]["reason"]
    assert times_logged("The API refused a context cache") == 1


def test_a_cache_gone_mid_run_sends_the_rest_uncached(set_connection, tmp_path, times_logged):
    with FlexEmulator(seed=2, slots=4, service_time=(0.05, 0.1)) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        import threading

        def delete_when_made() -> None:
            hook = GeminiFlexHook()
            while not emulator.admin.caches()["created"]:
                time.sleep(0.01)
            while len(emulator.admin.calls()) < 8:
                time.sleep(0.01)
            hook.caches.delete(emulator.admin.caches()["caches"][0]["name"])

        deleter = threading.Thread(target=delete_when_made)
        deleter.start()
        summary = _operator(tmp_path, records=_rows(60), max_concurrency=4).execute(context={})
        deleter.join()
    assert summary["succeeded"] == 60 and summary["failed"] == 0 and summary["context_cache"]["lost"]
    assert times_logged("is gone") == 1


def test_the_ttl_is_extended_while_the_run_goes_on(connection, tmp_path):
    import asyncio
    import logging

    hook = GeminiFlexHook(retry_policy=POLICY)
    plan = CachePlan(True, "test", 2100, ttl_s=2.0)
    cache = RunCache(hook.caches, store=OutputStore(str(tmp_path)), prefix=SharedPrefix(LONG_INSTRUCTION),
                     model=FLASH, plan=plan, log=logging.getLogger("test"))  # fmt: skip
    cache.open()

    async def outlive_the_first_ttl() -> None:
        keeper = asyncio.create_task(cache.keep_alive())
        await asyncio.sleep(3.5)
        keeper.cancel()

    asyncio.run(outlive_the_first_ttl())
    assert hook.caches.get(cache.info.name) is not None, "alive 3.5 s after a 2 s TTL"
    assert cache.close() > 0 and connection.admin.caches()["alive"] == 0


CRASHING_RUN = """
import sys
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
GeminiFlexEnrichOperator(
    task_id="enrich", key_field="id", prompt_template="Categorise {{ row.title }}", output_path=sys.argv[1],
    records=[{"id": f"p{i:04d}", "title": f"product {i}"} for i in range(200)], model="gemini-2.5-flash",
    system_instruction=" ".join(f"rule{i} applies." for i in range(700)), max_concurrency=2,
    retry_policy=FlexRetryPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.5, deadline=600),
).execute(context={})
"""


def test_sigkill_mid_run_then_rerun_reattaches_and_no_cache_outlives_the_run(set_connection, tmp_path):
    output = tmp_path / "out"
    with FlexEmulator(seed=4, slots=2, service_time=(0.05, 0.05)) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        script = tmp_path / "run.py"
        script.write_text(textwrap.dedent(CRASHING_RUN))
        process = subprocess.Popen([sys.executable, str(script), str(output)], env=os.environ.copy())
        try:
            deadline = time.monotonic() + 120
            while len(emulator.admin.calls()) < 20:
                assert process.poll() is None and time.monotonic() < deadline, "the run never got going"
                time.sleep(0.02)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            process.kill()
        assert emulator.admin.caches()["alive"] == 1 and (output / "context_cache.json").exists()
        rows = [{"id": f"p{i:04d}", "title": f"product {i}"} for i in range(200)]
        summary = _operator(output, records=rows, max_concurrency=8).execute(context={})
        caches = emulator.admin.caches()
    assert summary["context_cache"]["reattached"] and caches["created"] == 1 and caches["alive"] == 0
    assert sorted(r["key"] for r in _results(output)) == [row["id"] for row in rows]
    assert not (output / "context_cache.json").exists()


def test_a_leftover_cache_with_other_contents_is_deleted_not_reused(connection, tmp_path):
    hook = GeminiFlexHook(retry_policy=POLICY)
    stale = hook.caches.create(model=FLASH, system_instruction=LONG_INSTRUCTION + " old", ttl_s=600,
                               display_name=display_name_for(str(tmp_path)))  # fmt: skip
    (tmp_path / "context_cache.json").write_text(json.dumps({"name": stale.name, "digest": "other"}))
    summary = _operator(tmp_path).execute(context={})
    caches = connection.admin.caches()
    assert summary["context_cache"]["made"] and caches["created"] == 2 and caches["alive"] == 0


def test_a_batch_route_run_with_a_long_shared_instruction_answers_every_row(set_connection, tmp_path):
    with FlexEmulator(seed=3, batch=BatchSettings(turnaround_s=0.3)) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        batch = _operator(tmp_path / "batch", route="batch", batch_poll_interval=0.2, deferrable=False
                          ).execute(context={})  # fmt: skip
        auto = _operator(tmp_path / "auto", records=_rows(90), route="auto", finish_by=timedelta(seconds=10),
                         requests_per_minute=120, batch_poll_interval=0.2, deferrable=False,
                         model="gemini-2.5-flash-lite").execute(context={})  # fmt: skip
        caches = emulator.admin.caches()
    assert batch["succeeded"] == 30 and batch["failed"] == 0 and batch["context_cache"] is None
    assert auto["succeeded"] == 90 and auto["failed"] == 0 and auto["rows_by_route"]["batch"] > 0
    assert caches["alive"] == 0


def test_plan_and_ttl_are_pure_decisions():
    prices = DEFAULT_PRICES
    assert plan_cache(mode="auto", shared_tokens=2000, rows=600, model=FLASH, tier="flex", prices=prices).make
    assert not plan_cache(mode="auto", shared_tokens=900, rows=600, model=FLASH, tier="flex", prices=prices).make
    assert not plan_cache(mode="auto", shared_tokens=2000, rows=600, model="gemini-2.5-pro", tier="flex",
                          prices=prices).make  # fmt: skip
    assert not plan_cache(mode="off", shared_tokens=9000, rows=600, model=FLASH, tier="flex", prices=prices).make
    one_row = plan_cache(mode="auto", shared_tokens=2000, rows=1, model=FLASH, tier="flex", prices=prices)
    storage = cache_storage_cost(2000, one_row.ttl_s / 3600, model=FLASH)
    assert not one_row.make and storage > 2000 * (0.15 - 0.03) / 1e6
    assert cache_ttl(10, 10.0) == 600.0 and cache_ttl(36_000, 2.0) == 6 * 3600.0 and cache_ttl(3000, None) == 4500.0
