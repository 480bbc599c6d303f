"""The hook's overhead per call against a raw google-genai call, side by side in one run.

Both talk to the embedded emulator with zero service time, so the difference is
the hook's own work (config building, retry layer, usage and cost, and its
one INFO summary line per call, which is printed: read the last four lines).
Rounds alternate between the two so machine noise hits both alike.

    .venv/bin/python benchmarks/hook_overhead.py [--calls 400] [--rounds 8] | tail -4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from google import genai
from google.genai import types

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per side in all")
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds the calls are split into")
    args = parser.parse_args()
    per_round = max(1, args.calls // args.rounds)
    with FlexEmulator(slots=4) as emulator:
        os.environ["AIRFLOW_CONN_GEMINI_FLEX_BENCH"] = json.dumps(
            {"conn_type": "gemini_flex", "host": emulator.base_url, "password": "bench-key"}
        )
        hook = GeminiFlexHook("gemini_flex_bench")
        client = genai.Client(api_key="bench-key", http_options=types.HttpOptions(base_url=emulator.base_url))
        raw_config = types.GenerateContentConfig(service_tier="flex", http_options=types.HttpOptions(timeout=900_000))

        def raw_call(i: int) -> None:
            client.models.generate_content(model="gemini-3-flash-preview", contents=f"row {i}", config=raw_config)

        def hook_call(i: int) -> None:
            hook.generate_content(contents=f"row {i}", model="gemini-3-flash-preview")

        raw_call(-1), hook_call(-1)  # warm both paths up
        timings: dict[str, list[float]] = {"raw SDK": [], "hook": []}
        for round_number in range(args.rounds):
            for name, call in (("raw SDK", raw_call), ("hook", hook_call)):
                started = time.perf_counter()
                for i in range(per_round):
                    call(round_number * per_round + i)
                timings[name].append((time.perf_counter() - started) / per_round * 1000)
    raw, wrapped = statistics.median(timings["raw SDK"]), statistics.median(timings["hook"])
    print(f"calls per side: {per_round * args.rounds} in {args.rounds} alternating rounds")
    print(f"raw SDK : {raw:.2f} ms/call (median of rounds)")
    print(f"hook    : {wrapped:.2f} ms/call (median of rounds)")
    print(f"ratio hook/raw: {wrapped / raw:.2f}x  (overhead {wrapped - raw:+.2f} ms/call)")


if __name__ == "__main__":
    main()
