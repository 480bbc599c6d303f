"""The stuck-job case of ``enrich_throughput.py --scenario deadline``: a Batch API that never finishes a job.

900 rows, 300 requests/min known to the connection (flex serves about 270 by ``finish_by`` = 60 s), every
batch job stuck until cancelled (``flex-emulator --batch-stuck``): the watchdog cancels the job 15 s past
the deadline and flex serves its rows. Reports the wall time to the last row against ``finish_by``, rows
per route, rows late (served on flex after the cut) and rows answered twice.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from emulator_process import emulator_process, use_connection

from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator


def run_stuck_case(model: str, rows: int = 900, rpm: int = 300, finish_by: float = 60.0) -> dict:
    """Return the figures of one run against a stalled Batch API."""
    flags = ["--rpm", str(rpm), "--quota-window", "sliding", "--batch-stuck", "--seed", "1"]
    with emulator_process(*flags) as admin, tempfile.TemporaryDirectory() as output:
        use_connection("gemini_flex_bench", admin.base_url, quotas={"*": {"requests_per_minute": rpm}})
        started = time.monotonic()
        summary = GeminiFlexEnrichOperator(
            task_id="bench",
            records=[{"id": f"p{i:05d}", "title": f"product {i}"} for i in range(rows)],
            key_field="id",
            prompt_template="Categorise product {{ row.id }}: {{ row.title }}",
            output_path=output,
            model=model,
            gemini_flex_conn_id="gemini_flex_bench",
            route="auto",
            finish_by=timedelta(seconds=finish_by),
            batch_poll_interval=60.0,  # the default: the watchdog wakes at the cutoff, not at a poll
            deferrable=False,
        ).execute(context={})
        elapsed = time.monotonic() - started
        keys = [json.loads(line)["key"] for f in Path(output).glob("results-*.jsonl") for line in f.open()]
        flex_ok = admin.stats()["calls"].get("flex", {}).get("ok", 0)
    return {
        "rows": rows,
        "answered": len(set(keys)),
        "twice": len(keys) - len(set(keys)) + max(0, flex_ok - summary["rows_by_route"]["flex"]),
        "by_route": summary["rows_by_route"],
        "late": summary["late_rows"],
        "late_jobs": summary["late_jobs"],
        "elapsed": elapsed,
        "finish_by": finish_by,
    }


def print_stuck_case(r: dict) -> None:
    print(
        f"stuck batch job: {r['rows']} rows, finish_by {r['finish_by']:g}s: every row answered {r['answered']}, "
        f"last row at {r['elapsed']:.1f}s ({r['elapsed'] / r['finish_by']:.0%} of finish_by), flex "
        f"{r['by_route']['flex']} / batch {r['by_route']['batch']}, {r['late']} rows late (job cancelled, served on "
        f"flex), {r['twice']} answered twice"
    )
