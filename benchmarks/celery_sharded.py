"""Sharded enrichment on a CeleryExecutor deployment: two workers against one, on one shared quota.

The deployment `tests/integration/celery_deployment.py` builds for the Celery test (PostgreSQL, Redis as
broker and quota store, api-server, scheduler, dag-processor, triggerer, Celery workers of 4 slots)
runs `flex_sharded_enrichment` (8 shards) against the emulator's requests-per-minute quota, first
with two workers, then the same input size on a deployment with one. For each: rows/s from the first
answer to the last against RPM/60, per worker (by the hosts in the task instances) and in total, and
the 429s. Aim (issue 22): the total near RPM/60 either way (the quota, not the workers, is the bound)
and no 429 storm.

    .venv/bin/python benchmarks/celery_sharded.py [--rpm 300] [--rows 400]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from airflow_provider_flex.emulator import FlexEmulator  # noqa: E402
from tests.integration.celery_deployment import SKU, celery_deployment, write_catalogue  # noqa: E402

MODEL = "gemini-2.5-flash-lite"
KEY = "bench-celery-key"


def run(workers: tuple[str, ...], args: argparse.Namespace, root: Path) -> dict:
    root.mkdir(parents=True)
    catalogue = root / "catalogue.csv"
    write_catalogue(catalogue, 30_000, args.rows)
    with (
        FlexEmulator(api_key=KEY, slots=32, service_time=(0.5, 1.5), rpm=args.rpm, seed=4) as emulator,
        celery_deployment(root, emulator, KEY, workers) as airflow,
    ):
        airflow.cli("variables", "set", "flex_output_root", str(root / "output"))
        conf = {
            "input_path": str(catalogue),
            "rows_per_shard": args.rows // 8,
            "model": MODEL,
            "rate_limit_redis_conn_id": "flex_redis",
            "requests_per_minute": args.rpm,
        }
        run_id = airflow.trigger("flex_sharded_enrichment", conf)
        state = airflow.wait_for_run("flex_sharded_enrichment", run_id, timeout=3600)
        hosts = dict(
            airflow.query(
                "SELECT map_index, hostname FROM task_instance WHERE dag_id = 'flex_sharded_enrichment' "
                "AND run_id = ? AND task_id = 'enrich_shard'",
                run_id,
            )
        )
        calls = [call for call in emulator.admin.calls() if SKU.search(call["prompt"] or "")]
    answered = sorted(call["time"] for call in calls if call["outcome"] == "ok")
    span = answered[-1] - answered[0] if len(answered) > 1 else float("nan")
    rows_per_shard = args.rows // 8
    rows_by_worker: dict[str, int] = {}
    for call in calls:
        if call["outcome"] == "ok":
            shard = (int(SKU.search(call["prompt"]).group()[4:]) - 30_000) // rows_per_shard
            worker = (hosts.get(shard) or "?").split("@")[0]
            rows_by_worker[worker] = rows_by_worker.get(worker, 0) + 1
    return {
        "state": state,
        "rows": len(answered),
        "rows_per_s": (len(answered) - 1) / span,
        "refused": sum(1 for call in calls if call["outcome"] != "ok"),
        "calls": len(calls),
        "per_worker": {worker: rows / span for worker, rows in sorted(rows_by_worker.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpm", type=int, default=300)
    parser.add_argument("--rows", type=int, default=400)
    args = parser.parse_args()
    bound = args.rpm / 60
    with tempfile.TemporaryDirectory(prefix="flex-celery-bench-") as tmp:
        results = {
            "two workers": run(("w1", "w2"), args, Path(tmp) / "two"),
            "one worker": run(("w1",), args, Path(tmp) / "one"),
        }
    print(
        f"{args.rows} rows in 8 shards, quota {args.rpm} requests/min = bound {bound:.2f} rows/s, Celery workers of 4 slots"
    )
    print(f"{'deployment':<12} {'state':<8} {'rows':>5} {'rows/s':>7} {'of bound':>9} {'429s':>6}  rows/s per worker")
    for name, result in results.items():
        share = result["rows_per_s"] / bound
        print(
            f"{name:<12} {result['state']:<8} {result['rows']:>5} {result['rows_per_s']:>7.2f} {share:>8.0%} "
            f"{result['refused']:>6}  " + ", ".join(f"{w} {r:.2f}" for w, r in result["per_worker"].items())
        )
    two, one = results["two workers"], results["one worker"]
    print(f"two workers / one worker: {two['rows_per_s'] / one['rows_per_s']:.2f}x rows/s")


if __name__ == "__main__":
    main()
