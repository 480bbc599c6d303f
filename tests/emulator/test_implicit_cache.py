"""The emulator's implicit prompt cache, as the API's caching page describes it (real SDK over HTTP)."""

from __future__ import annotations

from airflow_provider_flex.emulator.cache import min_prefix_tokens, shared_tokens

FLASH = "gemini-2.5-flash"
PRO = "gemini-2.5-pro"
#: 2,100 tokens (each rule is a word, a number-word and a full stop in the emulator's count).
LONG_INSTRUCTION = " ".join(f"rule{i} applies." for i in range(700))
SHORT_INSTRUCTION = " ".join(f"rule{i} applies." for i in range(300))


def _usage(client, instruction: str, contents: str, model: str = FLASH):
    config = {"service_tier": "flex", "system_instruction": instruction}
    return client.models.generate_content(model=model, contents=contents, config=config).usage_metadata


def test_a_prompt_that_starts_like_a_recent_one_is_served_partly_from_cache(start_emulator, make_client):
    emulator = start_emulator()
    client = make_client(emulator)
    first = _usage(client, LONG_INSTRUCTION, "Classify: garden hose")
    second = _usage(client, LONG_INSTRUCTION, "Classify: rake")
    assert not first.cached_content_token_count
    cached = second.cached_content_token_count
    assert 2100 <= cached < second.prompt_token_count, "the shared instruction, not the row's own words"
    assert emulator.admin.stats()["tokens"]["flex"]["cached"] == cached


def test_no_hit_below_the_models_minimum_or_when_the_cache_is_off(start_emulator, make_client):
    emulator = start_emulator()
    client = make_client(emulator)
    for contents in ("one", "two"):
        short = _usage(client, SHORT_INSTRUCTION, contents)
        pro = _usage(client, LONG_INSTRUCTION, contents, model=PRO)  # Pro needs 4,096 shared tokens
    assert not short.cached_content_token_count and not pro.cached_content_token_count
    off = start_emulator(implicit_cache_rate=0.0)
    client = make_client(off)
    for contents in ("one", "two"):
        usage = _usage(client, LONG_INSTRUCTION, contents)
    assert not usage.cached_content_token_count


def test_shared_tokens_count_whole_tokens_only():
    assert shared_tokens("alpha beta gamma", "alpha beta gamut") == 2  # "gam" is not a token of both
    assert shared_tokens("alpha beta", "alpha beta") == 2


def test_prefix_minimums_follow_the_published_rule():
    assert min_prefix_tokens("gemini-2.5-flash") == 1024 and min_prefix_tokens("models/gemini-2.5-pro") == 4096
    assert min_prefix_tokens("gemini-flash-latest") == 1024  # the alias: 3.5 Flash's
