"""Worker-slot seconds per deferred flex call, on a real deployment, from the task and trigger logs.

Runs tests/integration/dags/flex_fast_answers.py (24 mapped and 4 non-mapped
deferrable generate calls) on a real Airflow (api-server, scheduler,
dag-processor, triggerer; LocalExecutor) against the emulator, then reads each
task's logs: a worker log (``attempt=1.log``) is a worker slot taken, from its
first line to its last (task runner time; the worker process's start-up comes
on top and is not logged); a task with only a trigger log never took one.

    .venv/bin/python benchmarks/deferred_worker_time.py [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from airflow_provider_flex.emulator import FlexEmulator  # noqa: E402
from tests.deployment import AirflowDeployment  # noqa: E402

DAG_ID = "flex_fast_answers"


def log_span_s(path: Path) -> float:
    """Seconds from a JSON-lines log's first entry to its last."""
    stamps = [json.loads(line)["timestamp"] for line in path.read_text().splitlines() if line.startswith("{")]
    first, last = (datetime.fromisoformat(s.replace("Z", "+00:00")) for s in (stamps[0], stamps[-1]))
    return (last - first).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root_dir, FlexEmulator(slots=8, service_time=(0.2, 0.6)) as emulator:
        root = Path(root_dir)
        dags = root / "dags"
        dags.mkdir()
        (dags / f"{DAG_ID}.py").symlink_to(REPO / "tests" / "integration" / "dags" / f"{DAG_ID}.py")
        env = {"AIRFLOW_CONN_GEMINI_FLEX_DEFAULT": emulator.connection_json(initial_delay=0.2)}
        with AirflowDeployment(root / "home", dags, env) as airflow:
            runs = []
            for _ in range(args.runs):
                run_id = airflow.trigger(DAG_ID)
                state = airflow.wait_for_run(DAG_ID, run_id, timeout=600)
                runs.append((run_id, state))
            worker: dict[str, list[float]] = {"mapped": [], "single": []}
            for run_id, _ in runs:
                logs = airflow.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
                for kind, pattern in (("mapped", "task_id=mapped/map_index=*"), ("single", "task_id=single_*")):
                    for task_dir in logs.glob(pattern):
                        worker_log = task_dir / "attempt=1.log"
                        worker[kind].append(log_span_s(worker_log) if worker_log.exists() else 0.0)
    print(f"{args.runs} run(s) of {DAG_ID}: {', '.join(state for _, state in runs)}")
    for kind, spans in worker.items():
        took = [s for s in spans if s > 0]
        print(
            f"{kind:<7} deferred calls: {len(spans):3d}, {len(took):3d} took a worker slot; worker-slot seconds per call "
            f"(task runner time, log first to last line): median {statistics.median(spans):.2f} s, "
            f"max {max(spans):.2f} s"
        )


if __name__ == "__main__":
    main()
