"""The emulator's explicit caches (``cachedContents``), driven by the real SDK over HTTP."""

from __future__ import annotations

import time

import pytest
from google.genai import errors, types

FLASH = "gemini-2.5-flash"
#: 2,100 tokens in the emulator's count (a word, a number-word and a full stop per rule).
LONG_INSTRUCTION = " ".join(f"rule{i} applies." for i in range(700))


def _cache(client, *, model: str = FLASH, ttl: str = "600s", **fields):
    config = {"system_instruction": LONG_INSTRUCTION, "ttl": ttl, "display_name": "flex-test", **fields}
    return client.caches.create(model=model, config=types.CreateCachedContentConfig(**config))


def test_a_cache_is_made_named_by_a_request_and_billed_as_cached_tokens(emulator, client):
    cache = _cache(client, contents=["Glossary: hose means garden hose."])
    assert cache.name.startswith("cachedContents/") and cache.model == f"models/{FLASH}"
    assert cache.display_name == "flex-test" and cache.usage_metadata.total_token_count >= 2100
    answer = client.models.generate_content(
        model=FLASH, contents="Classify: rake", config={"cached_content": cache.name, "service_tier": "flex"}
    )
    usage = answer.usage_metadata
    assert usage.cached_content_token_count == cache.usage_metadata.total_token_count
    assert usage.prompt_token_count > usage.cached_content_token_count, "the row's own words are not cached"
    assert emulator.admin.stats()["tokens"]["flex"]["cached"] == usage.cached_content_token_count
    assert client.caches.get(name=cache.name).name == cache.name
    assert [c.name for c in client.caches.list()] == [cache.name]


def test_the_ttl_can_change_and_a_deleted_or_expired_cache_is_gone(emulator, client):
    cache = _cache(client)
    longer = client.caches.update(name=cache.name, config=types.UpdateCachedContentConfig(ttl="7200s"))
    assert longer.expire_time > cache.expire_time
    client.caches.delete(name=cache.name)
    with pytest.raises(errors.ClientError) as gone:
        client.caches.get(name=cache.name)
    assert gone.value.code == 404
    with pytest.raises(errors.ClientError) as refused:
        client.models.generate_content(model=FLASH, contents="x", config={"cached_content": cache.name})
    assert refused.value.code == 404 and "CachedContent not found" in refused.value.message
    short = _cache(client, ttl="1s")
    time.sleep(1.2)
    with pytest.raises(errors.ClientError) as expired:
        client.caches.get(name=short.name)
    assert expired.value.code == 404
    caches = emulator.admin.caches()
    assert caches["created"] == 2 and caches["alive"] == 0 and list(client.caches.list()) == []


def test_storage_is_counted_in_token_hours_while_a_cache_lives(emulator, client):
    cache = _cache(client)
    time.sleep(0.3)
    client.caches.delete(name=cache.name)
    stored = emulator.admin.caches()["storage_token_hours"][FLASH]
    tokens = cache.usage_metadata.total_token_count
    assert tokens * 0.3 / 3600 <= stored < tokens * 30 / 3600
    time.sleep(0.2)
    assert emulator.admin.caches()["storage_token_hours"][FLASH] == stored, "a deleted cache costs nothing more"


def test_the_documented_refusals(emulator, client):
    with pytest.raises(errors.ClientError) as small:
        client.caches.create(model=FLASH, config={"system_instruction": "Be brief.", "ttl": "60s"})
    assert small.value.code == 400 and "too small" in small.value.message
    with pytest.raises(errors.ClientError) as pro_small:  # Pro needs 4,096 tokens
        _cache(client, model="gemini-2.5-pro")
    assert pro_small.value.code == 400
    with pytest.raises(errors.ClientError) as image_model:
        _cache(client, model="gemini-2.5-flash-image")
    assert image_model.value.code == 400 and "does not support" in image_model.value.message
    cache = _cache(client)
    with pytest.raises(errors.ClientError) as with_instruction:
        client.models.generate_content(
            model=FLASH, contents="x", config={"cached_content": cache.name, "system_instruction": "Be brief."}
        )
    assert with_instruction.value.code == 400 and "system_instruction" in with_instruction.value.message
    with pytest.raises(errors.ClientError) as other_model:
        client.models.generate_content(
            model="gemini-2.5-flash-lite", contents="x", config={"cached_content": cache.name}
        )
    assert other_model.value.code == 400 and "has to be the same" in other_model.value.message
    with pytest.raises(errors.ClientError) as both:
        _cache(client, expire_time="2030-01-01T00:00:00Z")
    assert both.value.code == 400


def test_a_batch_line_naming_a_cache_is_refused_unless_allowed(start_emulator, make_client):
    for allowed in (False, True):
        emulator = start_emulator(batch_lines_may_name_caches=allowed)
        client = make_client(emulator)
        cache = _cache(client)
        job = client.batches.create(
            model=FLASH,
            src=[
                {"contents": [{"role": "user", "parts": [{"text": "Classify: rake"}]}],
                 "config": {"cached_content": cache.name}, "metadata": {"key": "a"}},
                {"contents": [{"role": "user", "parts": [{"text": "Classify: hose"}]}], "metadata": {"key": "b"}},
            ],
        )  # fmt: skip
        name = job.name
        emulator.admin.end_batch(name, "SUCCEEDED")
        lines = client.batches.get(name=name).dest.inlined_responses
        by_key = {line.metadata["key"]: line for line in lines}
        assert by_key["b"].response is not None
        if allowed:
            assert by_key["a"].response.usage_metadata.cached_content_token_count >= 2100
        else:
            assert by_key["a"].error is not None and "not supported in batch" in str(by_key["a"].error)
