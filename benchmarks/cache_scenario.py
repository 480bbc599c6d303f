"""The ``cache`` scenario of ``enrich_throughput.py``: what a shared instruction costs with and without a run's cache.

``--rows`` rows (default 600) share a 2,000-token system instruction; the emulator (in its own process)
serves the API's implicit cache on only ``--implicit-hits`` of the calls that could have one (default
30%). ``context_cache="auto"`` (one explicit cache for the run) and ``"off"`` (implicit hits only) run
side by side; each reports its cost as a fraction of the same tokens at the standard price with no
cached tokens, whether the summary's cost equals the emulator's bill (tokens and cache storage), rows/s,
and the caches alive afterwards.
"""

from __future__ import annotations

import argparse
import tempfile

from emulator_process import emulator_process, use_connection

from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
from airflow_provider_flex.pricing import DEFAULT_PRICES, token_cost

#: 2,001 tokens in the emulator's count (a word, a number-word and a full stop per rule).
INSTRUCTION = " ".join(f"rule{i} applies." for i in range(667))


def run_case(mode: str, rows: int, model: str, implicit_hits: float) -> dict:
    """Return one run's figures: cost against standard-uncached, the bill, rows/s, caches made and alive."""
    flags = ["--implicit-cache-rate", str(implicit_hits), "--slots", "16", "--service-time", "0.05", "--seed", "1"]
    with emulator_process(*flags) as admin, tempfile.TemporaryDirectory() as output:
        use_connection("gemini_flex_bench", admin.base_url)
        summary = GeminiFlexEnrichOperator(
            task_id="bench",
            records=[{"id": f"p{i:05d}", "title": f"product {i}"} for i in range(rows)],
            key_field="id",
            prompt_template="Categorise product {{ row.id }}: {{ row.title }}",
            system_instruction=INSTRUCTION,
            output_path=output,
            model=model,
            gemini_flex_conn_id="gemini_flex_bench",
            max_concurrency=32,
            context_cache=mode,
        ).execute(context={})
        stats, caches = admin.stats(), admin.caches()
    usage = stats["tokens"]["flex"]
    output_tokens = usage["output"] + usage["thoughts"]
    uncached_standard = token_cost(usage["prompt"], output_tokens, model=model, tier="standard")
    storage_price = DEFAULT_PRICES[model]["standard"].cache_storage or 0.0
    bill = token_cost(usage["prompt"], output_tokens, model=model, tier="flex", cached_tokens=usage["cached"])
    bill += caches["storage_token_hours"].get(model, 0.0) * storage_price / 1_000_000
    return {
        "mode": mode,
        "rows": summary["succeeded"],
        "share": summary["cost_usd"] / uncached_standard,
        "cached": usage["cached"] / usage["prompt"],
        "bill_gap": abs(summary["cost_usd"] - bill),
        "rows_per_s": summary["succeeded"] / summary["elapsed_s"],
        "made": caches["created"],
        "alive": caches["alive"],
        "storage": summary["cache_storage_usd"],
    }


def cache_scenario(args: argparse.Namespace, model: str) -> None:
    """Print ``context_cache="auto"`` and ``"off"`` side by side."""
    cases = [run_case(mode, args.rows, model, args.implicit_hits) for mode in ("auto", "off")]
    print(
        f"{args.rows} rows sharing a 2,000-token instruction on {model}, implicit cache hits on "
        f"{args.implicit_hits:.0%} of the calls that could have one"
    )
    print(f"{'context_cache':<13} {'rows':>5} {'cost/std-uncached':>17} {'tokens cached':>13} {'bill gap':>9} "
          f"{'rows/s':>7} {'caches':>6} {'alive':>5} {'storage':>9}")  # fmt: skip
    for r in cases:
        print(
            f"{r['mode']:<13} {r['rows']:>5} {r['share']:>17.1%} {r['cached']:>13.1%} ${r['bill_gap']:>8.6f} "
            f"{r['rows_per_s']:>7.1f} {r['made']:>6} {r['alive']:>5} ${r['storage']:>8.6f}"
        )
    auto, off = cases
    print(
        f"auto costs {auto['share'] / off['share']:.2f}x what off costs; rows/s auto/off {auto['rows_per_s'] / off['rows_per_s']:.2f}"
    )
