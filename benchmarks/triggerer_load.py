"""A triggerer full of waiting flex calls: memory per waiting call and the event loop's timeliness.

As in a triggerer, ``--calls`` GeminiFlexGenerateContentTriggers run on one event
loop, started in batches of ``--batch`` every ``--batch-every`` seconds (a
triggerer picks up new triggers in batches). The emulator runs in its own
process with one slot, held by a slow standard call until every flex call has
started and waited a while, so each call waits in the flex queue; then they are
served one by one. A 50 ms timer on the same loop (another DAG's sensor) records
how late it fires while the calls start, wait and finish. Memory is the process's
resident set at its peak (all calls waiting) less what it was after one warm-up
call. Aims (issue 12): at most 50 MB (50 KB per waiting call); timer late at
most 10 ms at p99 and 50 ms at worst.

    .venv/bin/python benchmarks/triggerer_load.py [--calls 1000] [--batch 50] [--batch-every 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time

import psutil
from emulator_process import emulator_process, use_connection

from airflow_provider_flex.triggers.gemini_flex import GeminiFlexGenerateContentTrigger

TIMER_S = 0.05
MODEL = "gemini-2.5-flash"


async def run(args: argparse.Namespace, base_url: str, admin) -> dict:
    loop = asyncio.get_running_loop()
    process = psutil.Process()

    def trigger(i: int) -> GeminiFlexGenerateContentTrigger:
        return GeminiFlexGenerateContentTrigger(
            contents=f"Judge answer {i}: is it grounded?", model=MODEL, gemini_flex_conn_id="gemini_flex_bench"
        )

    if args.gc == "freeze":  # the provider's opt-in: the first trigger freezes the start-up objects
        os.environ["AIRFLOW__GEMINI_FLEX__TRIGGERER_FREEZE_GC"] = "True"
    await anext(trigger(-1).run())  # warm-up: imports, the first client, first-use work
    gc.collect()
    if args.gc == "off":
        gc.disable()
    baseline_rss = process.memory_info().rss
    ticks: list[tuple[float, float]] = []  # (when, how late)

    async def timer() -> None:
        while True:
            before = loop.time()
            await asyncio.sleep(TIMER_S)
            ticks.append((time.monotonic(), loop.time() - before - TIMER_S))

    holder = admin.hold_slot(args.hold_s)
    probe = asyncio.create_task(timer())
    tasks = []
    started = time.monotonic()
    for first in range(0, args.calls, args.batch):
        tasks += [
            asyncio.create_task(anext(trigger(i).run())) for i in range(first, min(args.calls, first + args.batch))
        ]
        await asyncio.sleep(args.batch_every)
    all_started = time.monotonic()
    start_s = all_started - started
    peak_rss = baseline_rss
    while admin.stats()["queue_depth"]["flex"] < args.calls and not all(task.done() for task in tasks):
        peak_rss = max(peak_rss, process.memory_info().rss)
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)
    peak_rss = max(peak_rss, process.memory_info().rss)
    first_done = asyncio.Event()
    for task in tasks:
        task.add_done_callback(lambda _: first_done.set())
    await first_done.wait()
    finishing = time.monotonic()
    events = await asyncio.gather(*tasks)
    probe.cancel()
    lateness: dict[str, list[float]] = {"start": [], "wait": [], "finish": []}
    for when, late in ticks:
        lateness["start" if when <= all_started else "wait" if when <= finishing else "finish"].append(late)
    holder.join(timeout=60)
    return {
        "start_s": start_s,
        "added_mb": (peak_rss - baseline_rss) / 2**20,
        "per_call_kb": (peak_rss - baseline_rss) / 1024 / args.calls,
        "succeeded": sum(1 for e in events if e.payload.get("status") == "success"),
        "errors": sorted({str(e.payload.get("message"))[:200] for e in events if e.payload.get("status") != "success"}),
        "lateness": lateness,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--batch-every", type=float, default=0.5)
    parser.add_argument("--service-time", type=float, default=0.02, help="seconds each queued call takes once served")
    parser.add_argument(
        "--gc",
        choices=["on", "freeze", "off"],
        default="on",
        help="the garbage collector: as is, with [gemini_flex] triggerer_freeze_gc (gc.freeze at the first "
        "trigger), or off",
    )
    args = parser.parse_args()
    args.hold_s = args.calls / args.batch * args.batch_every + 10
    flags = ["--slots", "1", "--service-time", str(args.service_time), "--queue-depth", str(args.calls + 10)]
    with emulator_process(*flags) as admin:
        use_connection("gemini_flex_bench", admin.base_url)
        result = asyncio.run(run(args, admin.base_url, admin))
    print(
        f"{args.calls} deferred flex calls on one event loop, started in batches of {args.batch} every "
        f"{args.batch_every}s ({result['start_s']:.1f}s), all waiting in the flex queue, then served one by one"
    )
    print(f"succeeded: {result['succeeded']} of {args.calls}", *result["errors"], sep="\n  ")
    print(f"memory: {result['added_mb']:.1f} MB added at the peak = {result['per_call_kb']:.1f} KB per waiting call")
    every = [late for values in result["lateness"].values() for late in values]
    for name, values in [*result["lateness"].items(), ("all", every)]:
        if not values:
            continue
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(
            f"50 ms timer late while {name:<6}: p50 {statistics.median(values) * 1000:6.1f} ms  "
            f"p99 {p99 * 1000:6.1f} ms  max {max(values) * 1000:6.1f} ms  ({len(values)} ticks)"
        )


if __name__ == "__main__":
    main()
