"""Token prices for the models that support the flex tier.

Prices are data, not code: USD per 1M tokens, paid tier, prompts up to 200k
tokens, by served tier. Flex is 50% of standard. Output prices include thinking
tokens. The Batch API (tier ``batch``) costs the same 50% as flex. Prices change; pass your own table to the hook (``prices=``) or extend
this one rather than editing code paths.

Priority prices are not published as exact numbers ("75-100% more than
standard"), so priority is left out: a call served on priority gets
``cost_usd = None`` rather than a guess.

Cached prompt tokens (``cachedContentTokenCount``, served from the API's implicit cache or a cache
the caller made) are billed at the cached-input price, about a tenth of the input price, and an
explicit cache's storage per 1M tokens per hour. No primary source says whether the flex or batch
discount applies on top of the cached price (Vertex AI documents that the cache and batch discounts
do not stack), so by default it does not (:data:`DISCOUNT_ON_CACHED_TOKENS`): a flex call's cached
tokens cost what a standard call's do, which may over-report, never under-report, the bill.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, NamedTuple


class TokenPrice(NamedTuple):
    """USD per 1M tokens; ``image_output`` for image output tokens (image models), else ``output``.

    ``cached_input``: a cached prompt token (None: priced as ``input``); ``cache_storage``: USD per 1M tokens
    per hour an explicit cache is kept (None: unknown).
    """

    input: float
    output: float
    image_output: float | None = None
    cached_input: float | None = None
    cache_storage: float | None = None


#: The cached-input price as a fraction of the standard input price (the pricing page: about a tenth).
CACHED_INPUT_SHARE = 0.1
#: Whether the flex and batch discount also halves the cached-input price. No primary source says; Vertex AI
#: documents that the cache and batch discounts do not stack. Default: it does not (never under-reports).
DISCOUNT_ON_CACHED_TOKENS = False
#: Explicit cache storage, USD per 1M tokens per hour, by model family (the pricing page: Flash $1.00, Pro $4.50).
CACHE_STORAGE_FLASH = 1.00
CACHE_STORAGE_PRO = 4.50


#: The fewest tokens a context cache may hold, and a prompt's shared start needs for an implicit hit (the
#: caching page: 1,024 for Flash models, 4,096 for Pro; some translated pages say 2,048).
MIN_CACHE_TOKENS = 1024
MIN_CACHE_TOKENS_PRO = 4096


def min_cache_tokens(model: str) -> int:
    """Return the fewest tokens ``model`` caches (explicitly, or implicitly as a shared prompt start)."""
    return MIN_CACHE_TOKENS_PRO if "-pro" in model else MIN_CACHE_TOKENS


def _standard_and_flex(
    input_usd: float, output_usd: float, image_output_usd: float | None = None, *, storage: float = CACHE_STORAGE_FLASH
) -> dict[str, TokenPrice]:
    """Return the three tiers' prices from the standard ones: flex and batch at half, cached tokens as documented."""
    cached = input_usd * CACHED_INPUT_SHARE
    standard = TokenPrice(input_usd, output_usd, image_output_usd, cached, storage)
    half = TokenPrice(
        input_usd / 2,
        output_usd / 2,
        None if image_output_usd is None else image_output_usd / 2,
        cached / 2 if DISCOUNT_ON_CACHED_TOKENS else cached,
        storage,
    )
    return {"standard": standard, "flex": half, "batch": half}


#: model id -> served tier -> price. Standard prices from copies of the Gemini
#: pricing page (Sep 2026); flex and batch = 50% of standard.
DEFAULT_PRICES: Mapping[str, Mapping[str, TokenPrice]] = {
    "gemini-3.1-flash-lite-preview": _standard_and_flex(0.25, 1.50),
    "gemini-3.1-pro-preview": _standard_and_flex(2.00, 12.00, storage=CACHE_STORAGE_PRO),
    "gemini-3-flash-preview": _standard_and_flex(0.50, 3.00),
    "gemini-2.5-pro": _standard_and_flex(1.25, 10.00, storage=CACHE_STORAGE_PRO),
    "gemini-2.5-flash": _standard_and_flex(0.30, 2.50),
    "gemini-2.5-flash-lite": _standard_and_flex(0.10, 0.40),
    # Image models (copies of the pricing page, Nov 2026): image output is billed by token, one image being
    # IMAGE_OUTPUT_TOKENS tokens: $30/1M for 2.5 Flash Image ($0.039 an image), $120/1M for 3 Pro Image.
    "gemini-2.5-flash-image": _standard_and_flex(0.30, 2.50, 30.00),
    "gemini-3-pro-image-preview": _standard_and_flex(2.00, 12.00, 120.00, storage=CACHE_STORAGE_PRO),
}

#: Output tokens one generated image counts as (1024x1024 for 2.5 Flash Image; 1K/2K for 3 Pro Image).
IMAGE_OUTPUT_TOKENS: Mapping[str, int] = {"gemini-2.5-flash-image": 1290, "gemini-3-pro-image-preview": 1120}
#: The models that answer with images (``response_modalities`` including ``IMAGE``).
IMAGE_MODELS: tuple[str, ...] = tuple(IMAGE_OUTPUT_TOKENS)

#: Vertex AI's list prices for the same models, by served tier. Vertex lists the same standard prices
#: as the Gemini API for these models (copies of the Vertex AI generative AI pricing page, Nov 2026) and
#: Flex PayGo is 50% of them; kept as its own table because they may diverge. Provisioned Throughput
#: is prepaid capacity, not priced per token: calls it served have ``cost_usd = None``.
VERTEX_PRICES: Mapping[str, Mapping[str, TokenPrice]] = {model: dict(tiers) for model, tiers in DEFAULT_PRICES.items()}

#: The text models the flex documentation lists as supporting flex.
FLEX_MODELS: tuple[str, ...] = tuple(DEFAULT_PRICES)


def token_cost(
    prompt_tokens: int,
    output_tokens: int,
    *,
    model: str,
    tier: str,
    prices: Mapping[str, Mapping[str, TokenPrice]] = DEFAULT_PRICES,
    image_output_tokens: int = 0,
    cached_tokens: int = 0,
) -> float | None:
    """Return USD for the tokens at ``tier``'s price, or None when the table has no price.

    ``prompt_tokens`` includes ``cached_tokens`` (as the API counts them), which are billed at the
    cached-input price. ``output_tokens`` must already include thinking tokens, which are billed as
    output, and exclude ``image_output_tokens``, billed at the image output price.
    """
    price = prices.get(_bare_model_id(model), {}).get(tier)
    if price is None:
        return None
    image_price = price.image_output if price.image_output is not None else price.output
    cached = min(max(0, cached_tokens), prompt_tokens)
    cached_price = price.cached_input if price.cached_input is not None else price.input
    return (
        (prompt_tokens - cached) * price.input
        + cached * cached_price
        + output_tokens * price.output
        + image_output_tokens * image_price
    ) / 1_000_000


def usage_cost(
    usage: Any, *, model: str, tier: str, prices: Mapping[str, Mapping[str, TokenPrice]] = DEFAULT_PRICES
) -> float | None:
    """Return USD for a call's usage (a :class:`~airflow_provider_flex.hooks.results.FlexUsage`) at ``tier``'s price."""
    return token_cost(
        usage.prompt_tokens,
        usage.billed_output_tokens,
        model=model,
        tier=tier,
        prices=prices,
        image_output_tokens=usage.image_output_tokens,
        cached_tokens=usage.cached_tokens,
    )


def cache_saving(
    usage: Any, *, model: str, tier: str, prices: Mapping[str, Mapping[str, TokenPrice]] = DEFAULT_PRICES
) -> float | None:
    """Return what a call's cached tokens saved at ``tier``'s price (0 without any), or None when unpriced."""
    if not usage.cached_tokens:
        return 0.0
    paid = usage_cost(usage, model=model, tier=tier, prices=prices)
    uncached = usage_cost(replace(usage, cached_tokens=0), model=model, tier=tier, prices=prices)
    return None if paid is None or uncached is None else uncached - paid


def cache_storage_cost(
    tokens: int, hours: float, *, model: str, prices: Mapping[str, Mapping[str, TokenPrice]] = DEFAULT_PRICES
) -> float | None:
    """Return USD for keeping an explicit cache of ``tokens`` for ``hours``, or None when the price is unknown."""
    price = prices.get(_bare_model_id(model), {}).get("standard")
    if price is None or price.cache_storage is None:
        return None
    return tokens * hours * price.cache_storage / 1_000_000


def _bare_model_id(model: str) -> str:
    return model.removeprefix("models/")
