"""Cost when the API's cache serves part of a prompt: cached tokens at the cached price, equal to the bill."""

from __future__ import annotations

import pytest

from airflow_provider_flex.pricing import DEFAULT_PRICES, DISCOUNT_ON_CACHED_TOKENS, token_cost

FLASH = "gemini-2.5-flash"
LONG_INSTRUCTION = " ".join(f"rule{i} applies." for i in range(700))


def test_cached_tokens_cost_a_tenth_and_the_reported_cost_equals_the_emulators_bill(connection, hook):
    config = {"system_instruction": LONG_INSTRUCTION}
    responses = [hook.generate_content(contents=f"Classify: item {i}", model=FLASH, config=config) for i in range(4)]
    assert responses[0].usage.cached_tokens == 0
    assert all(r.usage.cached_tokens >= 2100 for r in responses[1:])
    tokens = connection.admin.stats()["tokens"]["flex"]
    output = tokens["output"] + tokens["thoughts"]
    bill = token_cost(tokens["prompt"], output, model=FLASH, tier="flex", cached_tokens=tokens["cached"])
    assert sum(r.cost_usd for r in responses) == pytest.approx(bill, rel=1e-9)
    prompts = token_cost(tokens["prompt"], 0, model=FLASH, tier="flex", cached_tokens=tokens["cached"])
    uncached = token_cost(tokens["prompt"], 0, model=FLASH, tier="flex")
    assert prompts < 0.5 * uncached, "three of four calls had their 2,100-token instruction at a tenth of the price"
    assert responses[1].to_dict()["usage"]["cached_tokens"] == responses[1].usage.cached_tokens
    saved = sum(r.cache_saved_usd for r in responses)  # what the cache saved: the difference, call by call
    assert saved == pytest.approx(uncached - prompts, rel=1e-9) and responses[0].cache_saved_usd == 0.0


def test_an_enrichment_summary_says_what_the_cache_saved(connection, tmp_path):
    from airflow_provider_flex.hooks.retry import FlexRetryPolicy
    from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

    summary = GeminiFlexEnrichOperator(
        task_id="enrich",
        records=[{"id": str(i), "title": f"item {i}"} for i in range(6)],
        key_field="id",
        prompt_template="Classify: {{ row.title }}",
        system_instruction=LONG_INSTRUCTION,
        output_path=str(tmp_path),
        model=FLASH,
        max_concurrency=1,
        retry_policy=FlexRetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=0.2, jitter=0.0, deadline=60),
    ).execute(context={})
    tokens = connection.admin.stats()["tokens"]["flex"]
    assert summary["cached_tokens"] == tokens["cached"] >= 5 * 2100
    output = tokens["output"] + tokens["thoughts"]
    bill = token_cost(tokens["prompt"], output, model=FLASH, tier="flex", cached_tokens=tokens["cached"])
    assert summary["cost_usd"] == pytest.approx(bill, abs=1e-6)
    uncached = token_cost(tokens["prompt"], output, model=FLASH, tier="flex")
    assert summary["cache_saved_usd"] > 0 and summary["cache_saved_usd"] == pytest.approx(uncached - bill, abs=1e-6)


def test_the_price_table_says_whether_flex_discounts_cached_tokens():
    prices = DEFAULT_PRICES[FLASH]
    assert prices["standard"].cached_input == pytest.approx(prices["standard"].input / 10)
    assert not DISCOUNT_ON_CACHED_TOKENS and prices["flex"].cached_input == prices["standard"].cached_input
    assert prices["flex"].cache_storage == 1.00 and DEFAULT_PRICES["gemini-2.5-pro"]["flex"].cache_storage == 4.50
    # a million prompt tokens, all cached, on flex: the standard cached price (the discounts do not stack)
    assert token_cost(1_000_000, 0, model=FLASH, tier="flex", cached_tokens=1_000_000) == pytest.approx(0.03)
    assert token_cost(100, 0, model=FLASH, tier="flex", cached_tokens=500) == pytest.approx(100 * 0.03 / 1e6)
