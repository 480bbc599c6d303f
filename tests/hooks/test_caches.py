"""``hook.caches``: explicit context caches through the real SDK against the emulator, and their cost."""

from __future__ import annotations

import time

import pytest

from airflow_provider_flex.exceptions import FlexRequestError
from airflow_provider_flex.pricing import cache_storage_cost, token_cost

FLASH = "gemini-2.5-flash"
LONG_INSTRUCTION = " ".join(f"rule{i} applies." for i in range(700))


def test_create_get_list_update_delete(connection, hook):
    caches = hook.caches
    made = caches.create(model=FLASH, system_instruction=LONG_INSTRUCTION, ttl_s=600, display_name="flex-run-1")
    assert made.name.startswith("cachedContents/") and made.model == FLASH and made.tokens >= 2100
    assert caches.get(made.name) == made
    assert [c.name for c in caches.list("flex-run-1")] == [made.name] and caches.list("other") == []
    longer = caches.update(made.name, ttl_s=7200)
    assert longer.expire_time > made.expire_time
    assert caches.delete(made.name) is True
    assert caches.get(made.name) is None and caches.delete(made.name) is False, "deleting twice is no error"
    assert connection.admin.caches()["alive"] == 0


def test_a_call_naming_the_cache_costs_what_the_emulator_bills(connection, hook):
    cache = hook.caches.create(model=FLASH, system_instruction=LONG_INSTRUCTION, ttl_s=600)
    responses = [hook.generate_content(contents=f"Classify: item {i}", model=FLASH, cached_content=cache.name)
                 for i in range(3)]  # fmt: skip
    assert all(r.usage.cached_tokens == cache.tokens for r in responses)
    time.sleep(0.2)
    storage = hook.caches.storage_cost(cache)
    hook.caches.delete(cache.name)
    tokens = connection.admin.stats()["tokens"]["flex"]
    bill = token_cost(tokens["prompt"], tokens["output"] + tokens["thoughts"], model=FLASH, tier="flex",
                      cached_tokens=tokens["cached"])  # fmt: skip
    assert sum(r.cost_usd for r in responses) == pytest.approx(bill, rel=1e-9)
    billed_hours = connection.admin.caches()["storage_token_hours"][FLASH]
    assert storage == pytest.approx(cache_storage_cost(round(billed_hours * 3600), 1 / 3600, model=FLASH), rel=0.5)
    assert 0 < storage < 1e-5


def test_the_api_refusing_a_cache_is_a_request_error(connection, hook):
    with pytest.raises(FlexRequestError) as small:
        hook.caches.create(model=FLASH, system_instruction="Be brief.")
    assert small.value.code == 400 and "too small" in str(small.value)
    with pytest.raises(ValueError, match="cannot be combined with system_instruction"):
        hook.generate_content(contents="x", cached_content="cachedContents/abc", system_instruction="Be brief.")
