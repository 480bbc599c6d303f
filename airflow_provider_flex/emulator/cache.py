"""The Gemini API's implicit prompt cache, as its caching page describes it.

Implicit caching is on by default for 2.5 and newer models: a request whose prompt starts with the same
tokens as a recent request to the same model, at least the model's minimum
(``pricing.published_cache_minimum``: 1,024 for Flash models, 4,096 for Pro, as the page said up to May 2026),
may be served partly from cache. Hits show as ``usageMetadata.cachedContentTokenCount``, a part of
``promptTokenCount``, billed at the cached-input price. The API promises no hit, so ``hit_rate`` is the chance that a request with such a prefix gets one (its own random draws: the emulator's other draws,
and so its shedding and faults, stay as they were). (ai.google.dev/gemini-api/docs/caching)
"""

from __future__ import annotations

import random
from collections import deque

from airflow_provider_flex.emulator import model as lm
from airflow_provider_flex.pricing import published_cache_minimum

#: Earlier prompts a request is compared with (per API key and model), and how long one stays cached.
RECENT_PROMPTS = 64
CACHE_LIFETIME_S = 300.0


def min_prefix_tokens(model: str) -> int:
    """Return the shared leading tokens ``model`` needs before its implicit cache serves any (the published
    minimum: the server knows its own, it learns nothing from clients)."""
    return published_cache_minimum(model)


def common_prefix_chars(first: str, second: str) -> int:
    """Return how many leading characters two texts share (a binary search of slice comparisons, in C)."""
    low, high = 0, min(len(first), len(second))
    while low < high:
        middle = (low + high + 1) // 2
        if first[:middle] == second[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def shared_tokens(first: str, second: str) -> int:
    """Return the whole tokens two prompts share at their start (a word cut in two does not count)."""
    chars = common_prefix_chars(first, second)
    if chars < min(len(first), len(second)) and chars and not first[chars - 1].isspace():
        chars = max(first.rfind(" ", 0, chars), first.rfind("\n", 0, chars), 0)
    return lm.count_tokens(first[:chars])


class ImplicitCache:
    """Recent prompts per (API key, model), and the tokens a new prompt shares with the longest match."""

    def __init__(self, hit_rate: float, seed: int | None = None) -> None:
        self.hit_rate = hit_rate
        self._rng = random.Random(seed)
        self._recent: dict[tuple[str, str], deque[tuple[float, str]]] = {}

    def cached_tokens(self, key: str, model: str, prompt: str, prompt_tokens: int, now: float) -> int:
        """Return the tokens of ``prompt`` served from cache (0: no hit), and remember the prompt."""
        minimum = min_prefix_tokens(model)
        if prompt_tokens < minimum or self.hit_rate <= 0.0:
            return 0
        recent = self._recent.setdefault((key, model), deque(maxlen=RECENT_PROMPTS))
        live = [earlier for at, earlier in recent if now - at <= CACHE_LIFETIME_S]
        # the longest shared start in characters first (cheap), then its tokens, counted once
        longest = max(live, key=lambda earlier: common_prefix_chars(prompt, earlier), default=None)
        best = shared_tokens(prompt, longest) if longest is not None else 0
        recent.append((now, prompt))
        if best < minimum or self._rng.random() >= self.hit_rate:
            return 0
        return min(best, prompt_tokens)
