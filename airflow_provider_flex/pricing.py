"""Token prices for the models that support the flex tier, and what a call's usage costs at them.

Prices are data, not code: ``prices.json`` beside this module (shipped in the package, read once) holds
every model the flex page lists with its source, its as-of date, which figures were checked against a copy
of the pricing page and which were derived; aliases (``gemini-flash-latest``) and the model lifecycle
(shutdown dates, replacements) are in the same file. A team corrects a price without a release through
Airflow config ``[gemini_flex] prices_file`` (:mod:`~airflow_provider_flex.price_file`), merged field by field.

USD per 1M tokens, paid tier, by served tier. Flex and the Batch API cost 50% of standard. Output prices
include thinking tokens. Prompts over ``long_prompt_tokens`` (200k) are billed at the long-prompt rates where
the page lists them (the Pro models). Audio prompt tokens (``promptTokensDetails``) have their own price;
tool-use prompt tokens (``toolUsePromptTokenCount``: tool results fed back to the model) are billed as input.
Cached prompt tokens are billed at the cached-input price; no source says flex halves it except 3.8 Flash's
row, so elsewhere flex's cached price is standard's (it may over-report, never under-report, the bill).
Priority prices are not published as exact numbers ("75-100% more than standard"): a call served on priority
gets ``cost_usd = None`` rather than a guess.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from importlib import resources
from typing import Any, NamedTuple

#: Tiers priced from the standard price: flex and batch at half (the flex and batch pages).
DISCOUNTED_TIERS = ("flex", "batch")
#: Whether the flex and batch discount also halves the cached-input price where an entry does not say.
DISCOUNT_ON_CACHED_TOKENS = False
#: The fewest tokens a context cache may hold when the data has no figure for a model: the caching page up
#: to May 2026 (1,024 for Flash models, 4,096 for Pro). The page of 2026-07 says 2,048 for 2.5 Flash and Pro
#: and 4,096 for 3.x Flash and 3.1 Pro; a refusal that states the minimum teaches it (learn_cache_minimum).
MIN_CACHE_TOKENS = 1024
MIN_CACHE_TOKENS_PRO = 4096


def published_cache_minimum(model: str, data: PriceData | None = None) -> int:
    """Return ``model``'s cache minimum from the price data, else the rule of the caching page up to May 2026."""
    bare = bare_model_id(model)
    listed = (data or SHIPPED).min_cache_tokens.get(bare)
    if listed is not None:
        return listed
    return MIN_CACHE_TOKENS_PRO if "-pro" in bare else MIN_CACHE_TOKENS


class TokenPrice(NamedTuple):
    """USD per 1M tokens at one tier; the optional rates fall back to ``input``/``output``/``cached_input``.

    ``long_*``: prompts over the long-prompt threshold; ``audio_*``: audio prompt tokens;
    ``cache_storage``: USD per 1M tokens per hour an explicit cache is kept (None: unknown).
    """

    input: float
    output: float
    image_output: float | None = None
    cached_input: float | None = None
    cache_storage: float | None = None
    long_input: float | None = None
    long_output: float | None = None
    long_cached_input: float | None = None
    audio_input: float | None = None
    audio_cached_input: float | None = None


@dataclass(frozen=True)
class Lifecycle:
    """A model's announced end: ``shutdown`` (calls fail) or ``deprecated`` (still served), and its replacement."""

    shutdown: date | None = None
    deprecated: date | None = None
    replacement: str | None = None


PriceMap = Mapping[str, Mapping[str, TokenPrice]]


@dataclass(frozen=True)
class PriceData:
    """Everything ``prices.json`` says: prices by model and tier, aliases, lifecycle, cache minimums, sources."""

    prices: PriceMap
    aliases: Mapping[str, str]
    lifecycle: Mapping[str, Lifecycle]
    min_cache_tokens: Mapping[str, int]
    image_output_tokens: Mapping[str, int]
    #: Models listed with no price ("unpriced": why), so an error can say so.
    unpriced: Mapping[str, str]
    long_prompt_tokens: int
    raw: Mapping[str, Any]


_PRICE_FIELDS = TokenPrice._fields


def tier_prices(entry: Mapping[str, Any], where: str) -> dict[str, TokenPrice]:
    """Return one model entry's prices by tier: standard as given, flex and batch as given over half of it."""
    standard = entry.get("standard")
    if not standard:
        return {}
    storage = entry.get("cache_storage")
    base = _token_price(standard, storage, where=f"{where}.standard")
    tiers = {"standard": base}
    for tier in DISCOUNTED_TIERS:
        half = {name: value / 2 for name, value in base._asdict().items() if value is not None}
        for name in ("cached_input", "long_cached_input", "audio_cached_input"):
            if not DISCOUNT_ON_CACHED_TOKENS and getattr(base, name) is not None:
                half[name] = getattr(base, name)
        half.pop("cache_storage", None)
        half.update(entry.get(tier) or {})
        tiers[tier] = _token_price(half, storage, where=f"{where}.{tier}")
    return tiers


def _token_price(values: Mapping[str, Any], storage: Any, *, where: str) -> TokenPrice:
    unknown = sorted(set(values) - set(_PRICE_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown price field(s) {', '.join(unknown)} (known: {', '.join(_PRICE_FIELDS)})")
    for name, value in values.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{where}.{name}: a price is a number of USD per 1M tokens >= 0, not {value!r}")
    if "input" not in values or "output" not in values:
        raise ValueError(f"{where}: a price needs 'input' and 'output' (USD per 1M tokens)")
    return TokenPrice(**{**values, "cache_storage": values.get("cache_storage", storage)})


def parse_price_data(raw: Mapping[str, Any], where: str = "prices.json") -> PriceData:
    """Return the price data of a ``prices.json`` document; raise ValueError naming the entry and field."""
    prices: dict[str, dict[str, TokenPrice]] = {}
    minimums: dict[str, int] = {}
    images: dict[str, int] = {}
    unpriced: dict[str, str] = {}
    for model, entry in (raw.get("models") or {}).items():
        tiers = tier_prices(entry, f"{where}: models.{model}")
        if tiers:
            prices[model] = tiers
        else:
            unpriced[model] = str(entry.get("unpriced") or "the price data has no 'standard' price for it")
        if entry.get("min_cache_tokens") is not None:
            minimums[model] = int(entry["min_cache_tokens"])
        if entry.get("image_output_tokens") is not None:
            images[model] = int(entry["image_output_tokens"])
    aliases = {name: str(alias["target"]) for name, alias in (raw.get("aliases") or {}).items()}
    lifecycle = {
        model: Lifecycle(
            shutdown=_date(entry.get("shutdown"), f"{where}: lifecycle.{model}.shutdown"),
            deprecated=_date(entry.get("deprecated"), f"{where}: lifecycle.{model}.deprecated"),
            replacement=entry.get("replacement"),
        )
        for model, entry in (raw.get("lifecycle") or {}).items()
    }
    return PriceData(
        prices=prices,
        aliases=aliases,
        lifecycle=lifecycle,
        min_cache_tokens=minimums,
        image_output_tokens=images,
        unpriced=unpriced,
        long_prompt_tokens=int(raw.get("long_prompt_tokens", 200_000)),
        raw=raw,
    )


def _date(value: Any, where: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{where}: a date is YYYY-MM-DD, not {value!r}") from None


def _shipped() -> PriceData:
    text = resources.files("airflow_provider_flex").joinpath("prices.json").read_text(encoding="utf-8")
    return parse_price_data(json.loads(text))


#: The price data shipped in the package (read once, at first import of this module).
SHIPPED = _shipped()
#: model id -> served tier -> price, as shipped (a team's ``prices_file`` is merged over it by the hook).
DEFAULT_PRICES: PriceMap = SHIPPED.prices
#: Vertex AI lists the same standard prices for these models (copies of its pricing page, Nov 2026) and
#: Flex PayGo is 50% of them; kept as its own table because they may diverge. Provisioned Throughput is
#: prepaid capacity, not priced per token: calls it served have ``cost_usd = None``.
VERTEX_PRICES: PriceMap = {model: dict(tiers) for model, tiers in DEFAULT_PRICES.items()}
#: Output tokens one generated image counts as, by image model.
IMAGE_OUTPUT_TOKENS: Mapping[str, int] = SHIPPED.image_output_tokens
#: The models that answer with images (``response_modalities`` including ``IMAGE``).
IMAGE_MODELS: tuple[str, ...] = tuple(IMAGE_OUTPUT_TOKENS)
#: The models of the price data, the emulator's default set (a shut-down model's calls are refused by the
#: real API; its lifecycle entry says so).
FLEX_MODELS: tuple[str, ...] = tuple(SHIPPED.raw["models"])
#: Model aliases the API serves, and the model each stands behind (``modelVersion`` names the target).
MODEL_ALIASES: Mapping[str, str] = SHIPPED.aliases


def bare_model_id(model: str) -> str:
    """Return ``model`` without its ``models/`` prefix, an alias resolved to the model it stands behind."""
    bare = model.removeprefix("models/")
    return MODEL_ALIASES.get(bare, bare)


def price_of(model: str, tier: str, prices: PriceMap = DEFAULT_PRICES) -> TokenPrice | None:
    """Return ``model``'s price at ``tier`` (aliases as their target), or None when the table has none."""
    bare = model.removeprefix("models/")
    tiers = prices.get(bare) or prices.get(bare_model_id(bare)) or {}
    return tiers.get(tier)


def min_cache_tokens(model: str, data: PriceData = SHIPPED) -> int:
    """Return the fewest tokens ``model`` caches (explicitly, or implicitly as a shared prompt start)."""
    from airflow_provider_flex.process_state import PROCESS

    bare = bare_model_id(model)
    learned = PROCESS.cache_minimums.get(bare)
    return learned if learned is not None else published_cache_minimum(bare, data)


def token_cost(
    prompt_tokens: int,
    output_tokens: int,
    *,
    model: str,
    tier: str,
    prices: PriceMap = DEFAULT_PRICES,
    image_output_tokens: int = 0,
    cached_tokens: int = 0,
    audio_prompt_tokens: int = 0,
    audio_cached_tokens: int = 0,
    tool_use_prompt_tokens: int = 0,
) -> float | None:
    """Return USD for the tokens at ``tier``'s price, or None when the table has no price.

    ``prompt_tokens`` includes ``cached_tokens`` and ``audio_prompt_tokens`` (as the API counts them);
    ``audio_cached_tokens`` are the cached ones among the audio. A prompt over the long-prompt threshold is
    billed at the long-prompt rates, input and output. ``tool_use_prompt_tokens`` are billed as input.
    ``output_tokens`` must include thinking tokens and exclude ``image_output_tokens`` (the image price).
    """
    price = price_of(model, tier, prices)
    if price is None:
        return None
    long = prompt_tokens > SHIPPED.long_prompt_tokens
    input_rate = (price.long_input if long else None) or price.input
    output_rate = (price.long_output if long else None) or price.output
    cached_rate = (price.long_cached_input if long else None) or price.cached_input or input_rate
    cached = min(max(0, cached_tokens), prompt_tokens)
    audio_cached = min(max(0, audio_cached_tokens), cached, audio_prompt_tokens)
    audio_uncached = min(max(0, audio_prompt_tokens - audio_cached), prompt_tokens - cached)
    text_uncached = prompt_tokens - cached - audio_uncached
    image_rate = price.image_output if price.image_output is not None else output_rate
    return (
        (text_uncached + max(0, tool_use_prompt_tokens)) * input_rate
        + audio_uncached * (price.audio_input or input_rate)
        + (cached - audio_cached) * cached_rate
        + audio_cached * (price.audio_cached_input or cached_rate)
        + output_tokens * output_rate
        + image_output_tokens * image_rate
    ) / 1_000_000


def usage_cost(usage: Any, *, model: str, tier: str, prices: PriceMap = DEFAULT_PRICES) -> float | None:
    """Return USD for a call's usage (a :class:`~airflow_provider_flex.hooks.results.FlexUsage`) at ``tier``'s price."""
    return token_cost(
        usage.prompt_tokens,
        usage.billed_output_tokens,
        model=model,
        tier=tier,
        prices=prices,
        image_output_tokens=usage.image_output_tokens,
        cached_tokens=usage.cached_tokens,
        audio_prompt_tokens=getattr(usage, "audio_prompt_tokens", 0),
        audio_cached_tokens=getattr(usage, "audio_cached_tokens", 0),
        tool_use_prompt_tokens=getattr(usage, "tool_use_prompt_tokens", 0),
    )


def cache_saving(usage: Any, *, model: str, tier: str, prices: PriceMap = DEFAULT_PRICES) -> float | None:
    """Return what a call's cached tokens saved at ``tier``'s price (0 without any), or None when unpriced."""
    if not usage.cached_tokens:
        return 0.0
    paid = usage_cost(usage, model=model, tier=tier, prices=prices)
    uncached = usage_cost(replace(usage, cached_tokens=0, audio_cached_tokens=0), model=model, tier=tier, prices=prices)
    return None if paid is None or uncached is None else uncached - paid


def cache_storage_cost(tokens: int, hours: float, *, model: str, prices: PriceMap = DEFAULT_PRICES) -> float | None:
    """Return USD for keeping an explicit cache of ``tokens`` for ``hours``, or None when the price is unknown."""
    price = price_of(model, "standard", prices)
    if price is None or price.cache_storage is None:
        return None
    return tokens * hours * price.cache_storage / 1_000_000


def unpriced_reason(model: str, tier: str, prices: PriceMap = DEFAULT_PRICES) -> str | None:
    """Return why ``model`` has no price at ``tier`` (None when it has one): what an error names."""
    if price_of(model, tier, prices) is not None:
        return None
    bare = bare_model_id(model)
    why = SHIPPED.unpriced.get(bare)
    if why:
        return f"model {bare!r} has no price on tier {tier!r}: {why}"
    return (
        f"model {bare!r} has no price on tier {tier!r} in the provider's price data (as of {SHIPPED.raw.get('as_of')}): "
        "add it to the file named by Airflow config [gemini_flex] prices_file"
    )


def learn_cache_minimum(model: str, minimum: int) -> bool:
    """Record the minimum the API stated in a "too small" refusal; return True when it was news."""
    from airflow_provider_flex.process_state import PROCESS

    bare = bare_model_id(model)
    if PROCESS.cache_minimums.get(bare) == minimum:
        return False
    PROCESS.cache_minimums[bare] = minimum
    return True
