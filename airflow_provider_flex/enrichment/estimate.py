"""A cost estimate before spending: prompt tokens counted on a sample of rows, priced for the whole input.

Input tokens are what ``countTokens`` says for a sample of the rows still to do (system instruction
included); output tokens cannot be counted before the calls, so they are an assumption: the
operator's ``estimated_output_tokens``, else ``max_output_tokens`` from ``generation_config`` (an upper
bound), else :data:`DEFAULT_OUTPUT_TOKENS` per row (thinking included, billed as output). Media
files of a row are not counted (258 tokens per image up to 384 px, more for larger ones).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_flex.enrichment.records import row_key
from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.pricing import cache_storage_cost, token_cost

if TYPE_CHECKING:
    from airflow_provider_flex.enrichment.context_cache import CachePlan
    from airflow_provider_flex.enrichment.request import EnrichRequest
    from airflow_provider_flex.enrichment.shared_prompt import SharedPrefix

#: Rows whose prompts are counted with countTokens (spread over the rows still to do).
SAMPLE_ROWS = 20
#: Output tokens per row assumed when neither estimated_output_tokens nor max_output_tokens is given.
DEFAULT_OUTPUT_TOKENS = 1000


@dataclass(frozen=True)
class CostEstimate:
    """The projected cost of the rows still to do, on the run's tier and at standard price.

    With a context cache planned, ``cached_tokens_per_row`` of each row's input are priced as cached and
    ``cache_storage_usd`` (its first TTL) is added; implicit cache hits are never assumed (none is promised).
    """

    rows: int
    sampled_rows: int
    input_tokens_per_row: float
    output_tokens_per_row: int
    cost_usd: float | None
    standard_cost_usd: float | None
    cached_tokens_per_row: int = 0
    cache_storage_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the estimate as JSON (what ``estimate_only`` returns under ``estimate``)."""
        return asdict(self)

    def describe(self, tier: str) -> str:
        """Return the estimate as the task log says it."""
        return (
            f"Cost estimate for {self.rows} rows: {_usd(self.cost_usd)} on {tier} ({_usd(self.standard_cost_usd)} at "
            f"standard price); {self.input_tokens_per_row:.1f} prompt tokens per row counted on {self.sampled_rows} "
            f"rows, {self.output_tokens_per_row} output tokens per row assumed"
            + (
                f"; {self.cached_tokens_per_row} of them per row from the context cache "
                f"(storage ${self.cache_storage_usd:.4f})."
                if self.cached_tokens_per_row
                else "."
            )
        )

    def check_cap(self, task: str, max_cost_usd: float) -> None:
        """Refuse a run whose estimate exceeds ``max_cost_usd``, before any generate call."""
        if self.cost_usd is not None and self.cost_usd > max_cost_usd:
            raise FlexError(
                f"{task}: the estimated cost ${self.cost_usd:.4f} of {self.rows} rows exceeds "
                f"max_cost_usd=${max_cost_usd} (prompts counted on {self.sampled_rows} rows, "
                f"{self.output_tokens_per_row} output tokens assumed per row: set estimated_output_tokens "
                "to what your answers take); no call was made."
            )


def _usd(value: float | None) -> str:
    return "unpriced" if value is None else f"${value:.4f}"


def output_tokens_per_row(estimated: int | None, generation_config: Mapping[str, Any] | None) -> int:
    """Return the output assumption: given, else the configured cap, else the default."""
    if estimated is not None:
        return estimated
    config = generation_config or {}
    cap = config.get("max_output_tokens") or config.get("maxOutputTokens")
    return int(cap) if cap else DEFAULT_OUTPUT_TOKENS


def sample_positions(rows: int, sample: int = SAMPLE_ROWS) -> set[int]:
    """Return up to ``sample`` positions spread evenly over ``rows`` (the first and last included)."""
    if rows <= sample:
        return set(range(rows))
    return {round(i * (rows - 1) / (sample - 1)) for i in range(sample)}


def estimate_cost(
    request: EnrichRequest, *, hook: Any, done: Collection[str], todo: int, cache_plan: CachePlan | None = None
) -> CostEstimate:
    """Return the cost of the ``todo`` rows not in ``done``, their prompts counted on a sample of them.

    Each row's input is its shared part (system instruction and shared contents) and its own prompt;
    with ``cache_plan`` making a cache, the shared part is priced as cached tokens and the cache's
    storage for its first TTL is added.
    """
    wanted = sample_positions(todo)
    counts = []
    position = 0
    model, shared = request.model_id, request.shared
    for number, row in request.rows():
        key = row_key(row, request.key_field, number)
        if key in done:
            continue
        if position in wanted:
            prompt = request.template.render(row, number=number, key=key)
            counts.append(hook.count_tokens(contents=_counted(shared, prompt), model=model))
        position += 1
    per_row = sum(counts) / len(counts) if counts else 0.0
    output_tokens = output_tokens_per_row(request.estimated_output_tokens, request.generation_config)
    input_total = round(per_row * todo)
    output_total = output_tokens * todo
    prices, tier = hook.price_table, request.price_tier
    cached_per_row, storage = 0, 0.0
    if cache_plan is not None and cache_plan.make and counts:
        cached_per_row = cache_plan.shared_tokens
        storage = cache_storage_cost(cache_plan.shared_tokens, cache_plan.ttl_s / 3600, model=model, prices=prices)
    cached_total = cached_per_row * todo

    def priced(at: str) -> float | None:
        cost = token_cost(input_total, output_total, model=model, tier=at, prices=prices, cached_tokens=cached_total)
        return None if cost is None else cost + (storage or 0.0)

    return CostEstimate(
        rows=todo,
        sampled_rows=len(counts),
        input_tokens_per_row=round(per_row, 1),
        output_tokens_per_row=output_tokens,
        cost_usd=_rounded(priced(tier)),
        standard_cost_usd=_rounded(priced("standard")),
        cached_tokens_per_row=cached_per_row,
        cache_storage_usd=round(storage or 0.0, 6),
    )


def _counted(shared: SharedPrefix, prompt: Any) -> Any:
    """Return what ``countTokens`` counts for one row: its shared part and its own prompt, as contents."""
    if not (shared.system_instruction or shared.parts):
        return prompt
    counted = shared.counted_contents()
    own = [{"text": prompt}] if isinstance(prompt, str) else list(prompt)
    return [{"role": "user", "parts": [*counted[0]["parts"], *own]}]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
