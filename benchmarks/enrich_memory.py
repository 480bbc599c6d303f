"""Peak memory of a 100,000-row enrichment: the worker process's resident set at its high point.

The input is a JSONL file of ``--rows`` rows, read as a stream; the enrichment runs
in a child process (so its peak is its own) against the emulator in a process of
its own with no limits. Aim (issue 13): peak RSS under 300 MB at 100,000 rows. A
1,000-row run beside it shows what the process costs before the rows do.

    .venv/bin/python benchmarks/enrich_memory.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emulator_process import emulator_process

WORKER = """
import json, resource, sys, time
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
started = time.monotonic()
summary = GeminiFlexEnrichOperator(
    task_id="enrich", input_path=sys.argv[1], key_field="id", model="gemini-2.5-flash-lite",
    prompt_template="Categorise {{ row.title }} ({{ row.brand }})", output_path=sys.argv[2],
    max_concurrency=32, max_failed_fraction=1.0,
).execute(context={})
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({"summary": summary, "peak_mb": peak_kb / 1024, "seconds": time.monotonic() - started}))
"""


def run(rows: int, base_url: str, workdir: Path) -> dict:
    source = workdir / f"input-{rows}.jsonl"
    with source.open("w") as handle:
        for i in range(rows):
            handle.write(json.dumps({"id": f"sku-{i:07d}", "title": f"product {i}", "brand": f"brand {i % 97}"}) + "\n")
    env = {
        **os.environ,
        "AIRFLOW_CONN_GEMINI_FLEX_DEFAULT": json.dumps(
            {"conn_type": "gemini_flex", "host": base_url, "password": "bench-key"}
        ),
    }
    result = subprocess.run(
        [sys.executable, "-c", WORKER, str(source), str(workdir / f"out-{rows}")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as root, emulator_process("--slots", "64") as admin:
        small = run(1_000, admin.base_url, Path(root))
        large = run(args.rows, admin.base_url, Path(root))
    print(f"enrichment of a streamed JSONL input, emulator in its own process ({time.monotonic() - started:.0f}s)")
    for result in (small, large):
        s = result["summary"]
        print(
            f"{s['total']:>7} rows: peak RSS {result['peak_mb']:6.1f} MB, {s['succeeded']} succeeded, "
            f"{s['failed']} failed, {s['total'] / result['seconds']:.0f} rows/s"
        )


if __name__ == "__main__":
    main()
