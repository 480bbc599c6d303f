"""Token prices for the models that support the flex tier.

Prices are data, not code: USD per 1M tokens, paid tier, prompts up to 200k
tokens, by served tier. Flex is 50% of standard. Output prices include thinking
tokens. The Batch API (tier ``batch``) costs the same 50% as flex. Prices change; pass your own table to the hook (``prices=``) or extend
this one rather than editing code paths.

Priority prices are not published as exact numbers ("75-100% more than
standard"), so priority is left out: a call served on priority gets
``cost_usd = None`` rather than a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple


class TokenPrice(NamedTuple):
    """USD per 1M tokens; ``image_output`` for image output tokens (image models), else ``output``."""

    input: float
    output: float
    image_output: float | None = None


def _standard_and_flex(
    input_usd: float, output_usd: float, image_output_usd: float | None = None
) -> dict[str, TokenPrice]:
    half = TokenPrice(input_usd / 2, output_usd / 2, None if image_output_usd is None else image_output_usd / 2)
    return {"standard": TokenPrice(input_usd, output_usd, image_output_usd), "flex": half, "batch": half}


#: model id -> served tier -> price. Standard prices from copies of the Gemini
#: pricing page (Sep 2026); flex and batch = 50% of standard.
DEFAULT_PRICES: Mapping[str, Mapping[str, TokenPrice]] = {
    "gemini-3.1-flash-lite-preview": _standard_and_flex(0.25, 1.50),
    "gemini-3.1-pro-preview": _standard_and_flex(2.00, 12.00),
    "gemini-3-flash-preview": _standard_and_flex(0.50, 3.00),
    "gemini-2.5-pro": _standard_and_flex(1.25, 10.00),
    "gemini-2.5-flash": _standard_and_flex(0.30, 2.50),
    "gemini-2.5-flash-lite": _standard_and_flex(0.10, 0.40),
    # Image models (copies of the pricing page, Nov 2026): image output is billed by token, one image being
    # IMAGE_OUTPUT_TOKENS tokens: $30/1M for 2.5 Flash Image ($0.039 an image), $120/1M for 3 Pro Image.
    "gemini-2.5-flash-image": _standard_and_flex(0.30, 2.50, 30.00),
    "gemini-3-pro-image-preview": _standard_and_flex(2.00, 12.00, 120.00),
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
) -> float | None:
    """Return USD for the tokens at ``tier``'s price, or None when the table has no price.

    ``output_tokens`` must already include thinking tokens, which are billed as
    output, and exclude ``image_output_tokens``, billed at the image output price.
    """
    price = prices.get(_bare_model_id(model), {}).get(tier)
    if price is None:
        return None
    image_price = price.image_output if price.image_output is not None else price.output
    return (prompt_tokens * price.input + output_tokens * price.output + image_output_tokens * image_price) / 1_000_000


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
    )


def _bare_model_id(model: str) -> str:
    return model.removeprefix("models/")
