"""Enrichment throughput against a known bound, side by side in one run; ratios, never timed tests.

Scenarios (``--scenario``):

- ``per-second`` (default): the emulator serves ``--slots`` calls at once for
  ``--service-time`` seconds each, admits ``--rps`` calls per second (its own burst
  limit) and sheds ``--preempt-rate`` of flex calls, so no client can beat
  ``min(slots / service_time, rps) * (1 - preempt_rate)`` rows/s. Beside
  GeminiFlexEnrichOperator, the seed's retry recipe (3 tries, 5 s exponential
  backoff, standard-tier fallback), sequential and with 32 threads, each for
  ``--baseline-seconds``.
- ``quota``: Gemini's requests-per-minute quota (``--rpm``, per key and model), the
  emulator in its own process: configured in the connection with fixed minute
  windows; learned from the 429s with sliding windows; configured with half the
  flex calls shed. The bound is ``rpm / 60`` rows/s (halved when half are shed,
  since a shed call still spends its request).
- ``cpu``: CPU seconds per row of the engine against a bare async SDK loop (32
  calls in flight) on an emulator with no limits in its own process.
- ``deadline``: ``--rows`` rows, a requests-per-minute quota (known to the connection)
  that lets flex serve a third of them by ``--finish-by`` seconds, batch jobs that take
  ``--batch-turnaround`` seconds: ``route="auto"`` against ``route="flex"`` alone. Reports
  when the last row was done against the deadline plus one turnaround, rows answered
  twice, and cost against the same tokens at the standard price. Then a stuck-job case
  (``stuck_batch.py``: 900 rows, 300 requests/min, ``finish_by`` 60 s, a Batch API that never
  finishes a job): the last row's time against ``finish_by``, rows per route and late, none twice.
- ``cache``: ``--rows`` rows (use 600) sharing a 2,000-token instruction, implicit cache hits on only
  ``--implicit-hits`` of the calls: ``context_cache="auto"`` against ``"off"``, cost as a fraction of the
  same tokens at standard price uncached, and rows/s (``cache_scenario.py``).

    .venv/bin/python benchmarks/enrich_throughput.py [--rows 2000] | tail -5
    .venv/bin/python benchmarks/enrich_throughput.py --scenario quota [--rpm 600 --minutes 3]
    .venv/bin/python benchmarks/enrich_throughput.py --scenario cpu [--rows 3000]
    .venv/bin/python benchmarks/enrich_throughput.py --scenario deadline --rows 3000 [--finish-by 60]
    .venv/bin/python benchmarks/enrich_throughput.py --scenario cache --rows 600 [--implicit-hits 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from cache_scenario import cache_scenario
from emulator_process import emulator_process, use_connection
from google import genai
from google.genai import types
from stuck_batch import print_stuck_case, run_stuck_case

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.enrichment.run import quiet_http_client_logs
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
from airflow_provider_flex.pricing import token_cost

MODEL = "gemini-3-flash-preview"


def standard_cost(stats: dict) -> float:
    total = 0.0
    for usage in stats["tokens"].values():
        total += (
            token_cost(
                usage["prompt"],
                usage["output"] + usage["thoughts"],
                model=MODEL,
                tier="standard",
                cached_tokens=usage.get("cached", 0),
            )
            or 0
        )
    return total


def flex_cost(stats: dict) -> float:
    total = 0.0
    for tier, usage in stats["tokens"].items():
        total += (
            token_cost(
                usage["prompt"],
                usage["output"] + usage["thoughts"],
                model=MODEL,
                tier=tier,
                cached_tokens=usage.get("cached", 0),
            )
            or 0
        )
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


def enrich_rows(conn_id: str, rows: int, output: str, **kwargs: object) -> dict:
    records = [{"id": f"p{i:05d}", "title": f"product {i}"} for i in range(rows)]
    return GeminiFlexEnrichOperator(
        task_id="bench",
        records=records,
        key_field="id",
        prompt_template="Categorise product {{ row.id }}: {{ row.title }}",
        output_path=output,
        model=MODEL,
        gemini_flex_conn_id=conn_id,
        max_concurrency=32,
        max_failed_fraction=1.0,  # dead letters are reported, not fatal, here
        **kwargs,
    ).execute(context={})


def run_quota_case(name: str, flags: list[str], extra: dict, rows: int, bound: float) -> dict:
    with emulator_process(*flags) as admin, tempfile.TemporaryDirectory() as output:
        use_connection("gemini_flex_bench", admin.base_url, **extra)
        summary = enrich_rows("gemini_flex_bench", rows, output)
        stats = admin.stats()
    calls = sum(sum(outcomes.values()) for outcomes in stats["calls"].values())
    refused = sum(stats["quota_refusals"].values())
    return {
        "name": name,
        "rows_per_s": summary["succeeded"] / summary["elapsed_s"],
        "of_bound": summary["succeeded"] / summary["elapsed_s"] / bound,
        "refused": refused,
        "refused_share": refused / calls if calls else 0.0,
        "calls": calls,
        "lost": rows - summary["succeeded"] - summary["failed"],
        "failed": summary["failed"],
    }


def quota_scenario(args: argparse.Namespace) -> None:
    rpm = args.rpm
    rows = int(rpm * args.minutes)
    capacity = ["--slots", str(args.slots), "--service-time", str(args.service_time), "--seed", "1"]
    configured = {"quotas": {MODEL: {"requests_per_minute": rpm}}}
    cases = [
        ("configured RPM, fixed windows", [*capacity, "--rpm", str(rpm)], configured, rpm / 60),
        ("learned RPM, sliding windows", [*capacity, "--rpm", str(rpm), "--quota-window", "sliding"], {}, rpm / 60),
        (
            "configured RPM, 50% flex shed",
            [*capacity, "--rpm", str(rpm), "--preempt-rate", "0.5"],
            configured,
            rpm / 60 * 0.5,
        ),
    ]
    print(
        f"quota: {rpm} requests/min per key and model ({rpm / 60:g}/s); capacity {args.slots} slots x "
        f"{args.service_time}s; {rows} rows per case (half as many when half are shed)"
    )
    print(f"{'case':<32} {'rows/s':>7} {'of bound':>8} {'429s':>5} {'of calls':>8} {'lost':>5} {'failed':>6}")
    for name, flags, extra, bound in cases:
        r = run_quota_case(name, flags, extra, rows if "shed" not in name else rows // 2, bound)
        print(
            f"{name:<32} {r['rows_per_s']:>7.2f} {r['of_bound']:>8.1%} {r['refused']:>5} {r['refused_share']:>8.2%} "
            f"{r['lost']:>5} {r['failed']:>6}"
        )


def bare_sdk_rows(base_url: str, rows: int, in_flight: int = 32, quiet: bool = False) -> None:
    """The least a client can do: 32 async SDK calls in flight, no retries, no bookkeeping.

    ``quiet`` silences the HTTP client's per-request INFO line, as the engine does.
    """
    client = genai.Client(api_key="bench-key", http_options=types.HttpOptions(base_url=base_url))
    config = types.GenerateContentConfig(service_tier="flex", http_options=types.HttpOptions(timeout=900_000))

    async def run() -> None:
        gate = asyncio.Semaphore(in_flight)

        async def one(i: int) -> None:
            async with gate:
                await client.aio.models.generate_content(
                    model=MODEL, contents=f"Categorise product p{i:05d}: product {i}", config=config
                )

        await asyncio.gather(*[one(i) for i in range(rows)])
        await client.aio.aclose()

    if quiet:
        with quiet_http_client_logs():
            asyncio.run(run())
    else:
        asyncio.run(run())


def cpu_scenario(args: argparse.Namespace) -> None:
    with emulator_process("--slots", "64") as admin:
        use_connection("gemini_flex_bench", admin.base_url)
        sides = {
            "bare async SDK": lambda: bare_sdk_rows(admin.base_url, args.rows),
            "bare, HTTP logs off": lambda: bare_sdk_rows(admin.base_url, args.rows, quiet=True),
            "GeminiFlexEnrichOperator": lambda: enrich_with_tmp(args.rows),
        }
        for side in sides.values():  # warm both up
            side()
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        wall: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, side in sides.items():
                cpu_started, wall_started = time.process_time(), time.perf_counter()
                side()
                cpu[name].append(time.process_time() - cpu_started)
                wall[name].append(time.perf_counter() - wall_started)
    print(f"{args.rows} rows per run, {args.rounds} alternating rounds, emulator in its own process (median)")
    bare_cpu = statistics.median(cpu["bare, HTTP logs off"]) / args.rows * 1000
    for name in sides:
        per_row = statistics.median(cpu[name]) / args.rows * 1000
        rate = args.rows / statistics.median(wall[name])
        print(f"{name:<26} CPU {per_row:.2f} ms/row ({per_row / bare_cpu:.2f}x bare, logs off)  {rate:.0f} calls/s")


def enrich_with_tmp(rows: int) -> None:
    with tempfile.TemporaryDirectory() as output:
        enrich_rows("gemini_flex_bench", rows, output)


def run_deadline_case(route: str, rows: int, finish_by: float, rpm: int, turnaround: float) -> dict:
    flags = ["--rpm", str(rpm), "--quota-window", "sliding", "--batch-turnaround", str(turnaround), "--seed", "1"]
    with emulator_process(*flags) as admin, tempfile.TemporaryDirectory() as output:
        use_connection("gemini_flex_bench", admin.base_url, quotas={"*": {"requests_per_minute": rpm}})
        started = time.monotonic()
        summary = enrich_rows(
            "gemini_flex_bench",
            rows,
            output,
            route=route,
            finish_by=timedelta(seconds=finish_by) if route == "auto" else None,
            batch_poll_interval=1.0,
            deferrable=False,
        )
        elapsed = time.monotonic() - started
        keys = [json.loads(line)["key"] for f in Path(output).glob("results-*.jsonl") for line in f.open()]
        stats = admin.stats()
    return {
        "elapsed": elapsed,
        "rows": len(set(keys)),
        "twice": len(keys)
        - len(set(keys))
        + max(0, stats["calls"].get("flex", {}).get("ok", 0) - summary["rows_by_route"]["flex"]),
        "by_route": summary["rows_by_route"],
        "cost_vs_standard": summary["cost_usd"] / summary["standard_cost_usd"],
    }


def deadline_scenario(args: argparse.Namespace) -> None:
    # flex serves a third by the deadline: rows / 3 in finish_by seconds
    rpm = max(1, round(args.rows / 3 / args.finish_by * 60))
    cases = {
        route: run_deadline_case(route, args.rows, args.finish_by, rpm, args.batch_turnaround)
        for route in ("auto", "flex")
    }
    target = args.finish_by + args.batch_turnaround
    print(
        f"{args.rows} rows, {rpm} requests/min (flex serves a third by the deadline), finish_by {args.finish_by:g}s, "
        f"batch turnaround {args.batch_turnaround:g}s: target {target:g}s"
    )
    print(
        f"{'route':<6} {'rows':>5} {'flex':>5} {'batch':>5} {'last row':>9} {'of target':>9} {'twice':>5} {'cost/std':>8}"
    )
    for route, r in cases.items():
        print(
            f"{route:<6} {r['rows']:>5} {r['by_route']['flex']:>5} {r['by_route']['batch']:>5} {r['elapsed']:>8.1f}s "
            f"{r['elapsed'] / target:>9.0%} {r['twice']:>5} {r['cost_vs_standard']:>8.3f}"
        )
    if not args.no_stuck:
        print_stuck_case(run_stuck_case(MODEL))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--service-time", type=float, default=0.2)
    parser.add_argument("--rps", type=float, default=20)
    parser.add_argument("--preempt-rate", type=float, default=0.0, help="fraction of flex calls shed with 503")
    parser.add_argument(
        "--quota-details",
        choices=["full", "retry-only", "none"],
        default="full",
        help="per-second scenario: what the emulator's 429s carry (full: QuotaFailure with the limit)",
    )
    parser.add_argument("--baseline-seconds", type=float, default=30)
    parser.add_argument("--scenario", choices=["per-second", "quota", "cpu", "deadline", "cache"], default="per-second")
    parser.add_argument("--finish-by", type=float, default=60.0, help="deadline scenario: seconds")
    parser.add_argument("--batch-turnaround", type=float, default=10.0, help="deadline scenario: seconds")
    parser.add_argument("--rpm", type=int, default=600, help="quota scenario: requests per minute")
    parser.add_argument("--minutes", type=float, default=3.0, help="quota scenario: rows = rpm x minutes")
    parser.add_argument("--rounds", type=int, default=3, help="cpu scenario: alternating rounds")
    parser.add_argument("--implicit-hits", type=float, default=0.3, help="cache scenario: implicit hit rate")
    parser.add_argument("--no-stuck", action="store_true", help="deadline scenario: leave out the stuck-job case")
    args = parser.parse_args()
    if args.scenario == "cache":
        cache_scenario(args, MODEL)
        return
    if args.scenario == "quota":
        quota_scenario(args)
        return
    if args.scenario == "cpu":
        cpu_scenario(args)
        return
    if args.scenario == "deadline":
        deadline_scenario(args)
        return
    settings = {
        "slots": args.slots,
        "service_time": (args.service_time, args.service_time),
        "rps": args.rps,
        "preempt_rate": args.preempt_rate,
        "quota_details": args.quota_details,
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
