"""Four enrichment processes on one API key and model: one quota shared through Redis, beside each pacing alone.

The emulator (its own process) enforces Gemini's requests-per-minute quota per key
and model (``--rpm``); each of ``--processes`` worker processes enriches its own
shard with ``GeminiFlexEnrichOperator``, every one configured with the project's
quota. With ``rate_limit_redis_conn_id`` they pace through one Redis state
(a real redis-server started here); without it each paces to the whole quota
alone. Aims (issue 13): with Redis, aggregate rows/s at least 95% of RPM/60 and
429s at most 1% of calls.

    .venv/bin/python benchmarks/shared_quota.py [--rpm 600 --processes 4 --minutes 2]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emulator_process import emulator_process  # noqa: E402

from tests.redis_server import RedisServer  # noqa: E402

MODEL = "gemini-2.5-flash"
WORKER = """
import json, sys
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
shard, rows, output, redis_conn_id = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] or None
records = [{"id": f"{shard}-{i:05d}", "title": f"product {i} of shard {shard}"} for i in range(rows)]
summary = GeminiFlexEnrichOperator(
    task_id=f"enrich_{shard}", records=records, key_field="id", model="gemini-2.5-flash",
    prompt_template="Categorise {{ row.title }}", output_path=output, max_concurrency=16,
    max_failed_fraction=1.0, rate_limit_redis_conn_id=redis_conn_id,
).execute(context={})
print("SUMMARY " + json.dumps(summary))
"""


def run_side(args: argparse.Namespace, redis_conn: str | None, workdir: Path) -> dict:
    rows = int(args.rpm * args.minutes / args.processes)
    flags = ["--rpm", str(args.rpm), "--quota-window", args.window, "--slots", "16", "--service-time", "0.05:0.15"]
    with emulator_process(*flags) as admin:
        env = {
            **os.environ,
            "AIRFLOW_CONN_GEMINI_FLEX_DEFAULT": json.dumps(
                {
                    "conn_type": "gemini_flex",
                    "host": admin.base_url,
                    "password": "bench-key",
                    "extra": {"quotas": {MODEL: {"requests_per_minute": args.rpm}}},
                }
            ),
        }
        if redis_conn:
            env["AIRFLOW_CONN_FLEX_QUOTA_REDIS"] = redis_conn
        started = time.monotonic()
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WORKER,
                    str(n),
                    str(rows),
                    str(workdir / f"{'redis' if redis_conn else 'alone'}-{n}"),
                    "flex_quota_redis" if redis_conn else "",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for n in range(args.processes)
        ]
        summaries = []
        for worker in workers:
            out, _ = worker.communicate()
            line = next(line for line in out.splitlines() if line.startswith("SUMMARY "))
            summaries.append(json.loads(line.removeprefix("SUMMARY ")))
        elapsed = time.monotonic() - started
        stats = admin.stats()
        answered = sorted(call["time"] for call in admin.calls() if call["outcome"] == "ok")
    calls = sum(sum(outcomes.values()) for outcomes in stats["calls"].values())
    refused = sum(stats["quota_refusals"].values())
    succeeded = sum(s["succeeded"] for s in summaries)
    return {
        "rows": rows * args.processes,
        "succeeded": succeeded,
        "failed": sum(s["failed"] for s in summaries),
        "rows_per_s": succeeded / elapsed,
        "of_bound": succeeded / elapsed / (args.rpm / 60),
        # The pacing alone: answers per second from the first answer to the last, without the
        # seconds the worker processes spend importing Airflow before their first call.
        "paced_of_bound": (len(answered) - 1) / (answered[-1] - answered[0]) / (args.rpm / 60),
        "refused": refused,
        "refused_share": refused / calls if calls else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=2.0, help="rows in all = rpm x minutes")
    parser.add_argument(
        "--window",
        choices=["sliding", "fixed"],
        default="sliding",
        help="the emulator's minute windows; fixed ones let a run straddling a boundary take two minutes' quota at once",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        workdir = Path(root)
        with RedisServer(workdir) as redis_server:
            shared = run_side(args, redis_server.connection_json(), workdir)
        alone = run_side(args, None, workdir)
    print(
        f"{args.processes} processes, one key and model, quota {args.rpm} requests/min ({args.rpm / 60:g}/s), "
        f"{shared['rows']} rows in all, {args.window} minute windows, emulator in its own process"
    )
    print("rows/s and 'of RPM/60' count from the processes' start (Airflow imports included);")
    print("'paced' counts from the first answer to the last, the rate the pacing kept while it ran.")
    print(f"{'pacing':<26} {'rows/s':>7} {'of RPM/60':>9} {'paced':>7} {'429s':>5} {'of calls':>8} {'failed':>6}")
    for name, r in (("shared through Redis", shared), ("each process alone", alone)):
        print(
            f"{name:<26} {r['rows_per_s']:>7.2f} {r['of_bound']:>9.1%} {r['paced_of_bound']:>7.1%} "
            f"{r['refused']:>5} {r['refused_share']:>8.2%} {r['failed']:>6}"
        )


if __name__ == "__main__":
    main()
