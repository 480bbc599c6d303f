"""Enrichment throughput against a known capacity bound, beside the seed's retry recipe, in one run.

The emulator serves ``--slots`` calls at once for ``--service-time`` seconds each,
admits ``--rps`` calls per second and sheds ``--preempt-rate`` of flex calls with
503, so no client can beat ``min(slots / service_time, rps) * (1 - preempt_rate)``
rows/s. Each contender gets a fresh emulator
with those settings:

- GeminiFlexEnrichOperator on ``--rows`` rows;
- the seed's recipe (3 tries, 5 s exponential backoff, standard-tier fallback on
  the last strike), sequential and in a pool of 32 threads, each for
  ``--baseline-seconds`` (sequential would take many minutes on all rows).

    .venv/bin/python benchmarks/enrich_throughput.py [--rows 2000] | tail -8
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from google import genai
from google.genai import types

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
from airflow_provider_flex.pricing import token_cost

MODEL = "gemini-3-flash-preview"


def standard_cost(stats: dict) -> float:
    total = 0.0
    for usage in stats["tokens"].values():
        total += token_cost(usage["prompt"], usage["output"] + usage["thoughts"], model=MODEL, tier="standard") or 0
    return total


def flex_cost(stats: dict) -> float:
    total = 0.0
    for tier, usage in stats["tokens"].items():
        total += token_cost(usage["prompt"], usage["output"] + usage["thoughts"], model=MODEL, tier=tier) or 0
    return total


def seed_recipe(client: genai.Client, prompt: str, max_retries: int = 3, base_delay: float = 5) -> bool:
    """The retry example of the flex documentation, verbatim in behaviour."""
    for attempt in range(max_retries):
        try:
            client.models.generate_content(model=MODEL, contents=prompt, config={"service_tier": "flex"})
            return True
        except Exception:
            if attempt < max_retries - 1:
                time.sleep(base_delay * (2**attempt))
            else:
                try:
                    client.models.generate_content(model=MODEL, contents=prompt)
                    return True
                except Exception:
                    return False
    return False


def run_seed(settings: dict, rows: int, threads: int, budget_s: float) -> dict:
    with FlexEmulator(**settings) as emulator:
        client = genai.Client(api_key="bench", http_options=types.HttpOptions(base_url=emulator.base_url))
        started = time.monotonic()
        stop = started + budget_s
        results: list[bool] = []
        lock = threading.Lock()
        counter = iter(range(rows))

        def worker() -> None:
            while time.monotonic() < stop:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                ok = seed_recipe(client, f"Categorise product p{index:05d}")
                with lock:
                    results.append(ok)

        with ThreadPoolExecutor(threads) as pool:
            for _ in range(threads):
                pool.submit(worker)
        elapsed = time.monotonic() - started
        stats = emulator.admin.stats()
    return {
        "rows": len(results),
        "lost": results.count(False),
        "rows_per_s": results.count(True) / elapsed,
        "standard_calls": stats["calls_by_tier"].get("standard", 0),
        "429": sum(c.get("rate_limited", 0) for c in stats["calls"].values()),
        "cost_vs_standard": flex_cost(stats) / standard_cost(stats) if standard_cost(stats) else 0,
    }


def run_enrich(settings: dict, rows: int) -> dict:
    with FlexEmulator(**settings) as emulator, tempfile.TemporaryDirectory() as output:
        os.environ["AIRFLOW_CONN_GEMINI_FLEX_BENCH"] = json.dumps(
            {"conn_type": "gemini_flex", "host": emulator.base_url, "password": "bench"}
        )
        records = [{"id": f"p{i:05d}", "title": f"product {i}"} for i in range(rows)]
        summary = GeminiFlexEnrichOperator(
            task_id="bench",
            records=records,
            key_field="id",
            prompt_template="Categorise product {{ row.id }}: {{ row.title }}",
            output_path=output,
            model=MODEL,
            gemini_flex_conn_id="gemini_flex_bench",
            max_concurrency=32,
            max_failed_fraction=1.0,  # dead letters are reported, not fatal, here
        ).execute(context={})
        written = sum(len(p.read_text().splitlines()) for p in Path(output).glob("results-*.jsonl"))
        stats = emulator.admin.stats()
    return {
        "rows": rows,
        "lost": rows - written - summary["failed"],
        "failed": summary["failed"],
        "rows_per_s": summary["succeeded"] / summary["elapsed_s"],
        "standard_calls": stats["calls_by_tier"].get("standard", 0),
        "429": summary["rate_limited_429"],
        "cost_vs_standard": flex_cost(stats) / standard_cost(stats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--service-time", type=float, default=0.2)
    parser.add_argument("--rps", type=float, default=20)
    parser.add_argument("--preempt-rate", type=float, default=0.0, help="fraction of flex calls shed with 503")
    parser.add_argument("--baseline-seconds", type=float, default=30)
    args = parser.parse_args()
    settings = {
        "slots": args.slots,
        "service_time": (args.service_time, args.service_time),
        "rps": args.rps,
        "preempt_rate": args.preempt_rate,
        "seed": 1,
    }
    # a shed call still spends its admission, so a row needs 1 / (1 - preempt_rate) calls on average
    bound = min(args.slots / args.service_time, args.rps) * (1 - args.preempt_rate)
    contenders = {
        "GeminiFlexEnrichOperator": run_enrich(settings, args.rows),
        "seed recipe, sequential": run_seed(settings, args.rows, 1, args.baseline_seconds),
        "seed recipe, 32 threads": run_seed(settings, args.rows, 32, args.baseline_seconds),
    }
    print(
        f"capacity bound: {bound:g} rows/s ({args.slots} slots x {args.service_time}s, {args.rps:g} calls/s, "
        f"{args.preempt_rate:.0%} of flex calls shed)"
    )
    print(
        f"{'contender':<26} {'rows':>5} {'rows/s':>7} {'of bound':>8} {'lost':>5} {'std calls':>9} {'429s':>5} {'cost/std':>8}"
    )
    for name, r in contenders.items():
        print(
            f"{name:<26} {r['rows']:>5} {r['rows_per_s']:>7.2f} {r['rows_per_s'] / bound:>8.0%} {r['lost']:>5} "
            f"{r['standard_calls']:>9} {r['429']:>5} {r['cost_vs_standard']:>8.2f}"
        )


if __name__ == "__main__":
    main()
