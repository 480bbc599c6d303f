"""`make demo`: the flex_product_enrichment DAG end to end on a real Airflow, against the embedded emulator.

It starts the flex emulator (shedding and rate limits at demo scale), migrates a
project-local Airflow home (.airflow/, ignored by git), defines the connections
in the environment, runs `airflow dags test flex_product_enrichment`, then prints
the first rows of the loaded table and the run's cost summary.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from airflow_provider_flex.emulator import FlexEmulator

ROOT = Path(__file__).resolve().parents[1]
HOME = ROOT / ".airflow"
AIRFLOW = Path(sys.executable).parent / "airflow"


def airflow(*args: str, env: dict[str, str], log: Path) -> None:
    with log.open("w") as handle:
        result = subprocess.run([AIRFLOW, *args], env=env, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        print(log.read_text()[-4000:])
        sys.exit(f"`airflow {' '.join(args)}` failed; full log in {log}")


def main() -> None:
    started = time.monotonic()
    HOME.mkdir(exist_ok=True)
    database = HOME / "demo.db"
    database.unlink(missing_ok=True)
    with FlexEmulator(slots=8, service_time=(0.05, 0.3), queue_depth=8, rps=30, preempt_rate=0.1, seed=7) as emulator:
        print(f"flex emulator at {emulator.base_url}: 8 slots, 30 calls/s, 10% of flex calls preempted")
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(HOME),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_GEMINI_FLEX_DEFAULT": emulator.connection_json("demo-key", initial_delay=0.5),
            "AIRFLOW_CONN_FLEX_DEMO_SQLITE": json.dumps({"conn_type": "sqlite", "host": str(database)}),
            "AIRFLOW_VAR_FLEX_OUTPUT_ROOT": str(HOME / "output" / str(int(time.time()))),
        }
        print("airflow db migrate ...")
        airflow("db", "migrate", env=env, log=HOME / "demo-db-migrate.log")
        print("airflow dags test flex_product_enrichment ...")
        log = HOME / "demo-dags-test.log"
        airflow("dags", "test", "flex_product_enrichment", env=env, log=log)
        stats = emulator.admin.stats()
    summary = next(line for line in log.read_text().splitlines() if line.startswith("Enriched "))
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT sku, category, short_description, service_tier FROM enriched_products ORDER BY sku LIMIT 5"
        )
        print("\nFirst rows of enriched_products:")
        for sku, category, description, tier in rows:
            print(f"  {sku}  {category:<26} [{tier}] {description[:70]}")
    print(f"\n{summary}")
    print(f"Emulator saw: {json.dumps(stats['calls'])}")
    print(f"Demo finished in {time.monotonic() - started:.0f}s; the DAG run's log is in {log}")


if __name__ == "__main__":
    main()
