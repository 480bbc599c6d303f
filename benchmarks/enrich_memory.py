"""Peak memory of a 100,000-row enrichment: the worker process's resident set at its high point.

The input is a JSONL file of ``--rows`` rows, read as a stream; the enrichment runs
in a child process (so its peak is its own) against the emulator in a process of
its own with no limits. Aim (issue 13): peak RSS under 300 MB at 100,000 rows. A
1,000-row run beside it shows what the process costs before the rows do.

    .venv/bin/python benchmarks/enrich_memory.py [--rows 100000]
    .venv/bin/python benchmarks/enrich_memory.py --source sql --rows 20000   # a PostgreSQL query, 2,000 beside it
    .venv/bin/python benchmarks/enrich_memory.py --source sql --rows 1000000 --small 10000 --table

With ``--source sql`` the rows come from ``SELECT`` on a table in a real PostgreSQL (Debian's package, started
for the run) through ``input_sql``, streamed through a server-side cursor; the small run has 2,000 rows
(``--small``). One row in a hundred asks for a prompt the API's safety filters block (a dead letter).
``--table`` loads every row into a PostgreSQL table with its status (``load_failed=True``), as the
``flex_reviews_table`` example does.
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
source = {"input_path": sys.argv[1]} if not sys.argv[1].startswith("SELECT") else {
    "input_sql": sys.argv[1], "input_conn_id": "bench_pg"}
if len(sys.argv) > 3:
    source.update(sql_conn_id="bench_pg", table=sys.argv[3], load_failed=True)
summary = GeminiFlexEnrichOperator(
    task_id="enrich", **source, key_field="id", model="gemini-2.5-flash-lite",
    prompt_template="Categorise {{ row.title }} ({{ row.brand }})", output_path=sys.argv[2],
    max_concurrency=32, max_failed_fraction=1.0,
).execute(context={})
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({"summary": summary, "peak_mb": peak_kb / 1024, "seconds": time.monotonic() - started}))
"""


def run(rows: int, base_url: str, workdir: Path, pg_port: int | None = None, table: bool = False) -> dict:
    if pg_port is None:
        source = str(workdir / f"input-{rows}.jsonl")
        with open(source, "w") as handle:
            for i in range(rows):
                row = {"id": f"sku-{i:07d}", "title": f"product {i}", "brand": f"brand {i % 97}"}
                handle.write(json.dumps(row) + "\n")
    else:
        source = f"SELECT id, title, brand FROM products WHERE n <= {rows}"
    env = {
        **os.environ,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",  # as deployed: Airflow's example plugins are not loaded
        "AIRFLOW_CONN_GEMINI_FLEX_DEFAULT": json.dumps(
            {"conn_type": "gemini_flex", "host": base_url, "password": "bench-key"}
        ),
        "AIRFLOW_CONN_BENCH_PG": json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": pg_port, "login": "airflow", "schema": "airflow"}
        ),
    }
    result = subprocess.run(
        [sys.executable, "-c", WORKER, source, str(workdir / f"out-{rows}"), *([f"enriched_{rows}"] if table else [])],
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
    parser.add_argument("--source", choices=["jsonl", "sql"], default="jsonl")
    parser.add_argument("--small", type=int, default=None, help="rows of the run beside it (1,000; 2,000 for sql)")
    parser.add_argument("--table", action="store_true", help="with --source sql: load the rows into a table")
    args = parser.parse_args()
    started = time.monotonic()
    if args.source == "sql":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests.postgres_server
        from tests.postgres_server import PostgresServer

        with PostgresServer() as server, tempfile.TemporaryDirectory() as root:
            _fill_products(server, args.rows)
            with emulator_process("--slots", "64") as admin:
                small = run(args.small or 2_000, admin.base_url, Path(root), server.port, args.table)
                large = run(args.rows, admin.base_url, Path(root), server.port, args.table)
        what = "a PostgreSQL query (server-side cursor)"
    else:
        with tempfile.TemporaryDirectory() as root, emulator_process("--slots", "64") as admin:
            small = run(args.small or 1_000, admin.base_url, Path(root))
            large = run(args.rows, admin.base_url, Path(root))
        what = "a streamed JSONL input"
    print(f"enrichment of {what}, emulator in its own process ({time.monotonic() - started:.0f}s)")
    for result in (small, large):
        s = result["summary"]
        loaded = f", {s['loaded_rows']} loaded into {s['table']}" if s.get("table") else ""
        print(
            f"{s['total']:>7} rows: peak RSS {result['peak_mb']:6.1f} MB, {s['succeeded']} succeeded, "
            f"{s['failed']} failed{loaded}, {s['total'] / result['seconds']:.0f} rows/s"
        )

    print(f"peak RSS difference: {large['peak_mb'] - small['peak_mb']:.1f} MB")


def _fill_products(server: object, rows: int) -> None:
    """Create the ``products`` table of ``rows`` rows in the benchmark's PostgreSQL (``n`` numbers them)."""
    import psycopg2

    with psycopg2.connect(server.dsn) as conn, conn.cursor() as cursor:  # type: ignore[attr-defined]
        cursor.execute(
            "CREATE TABLE products AS SELECT g AS n, 'sku-' || lpad(g::text, 7, '0') AS id, 'product ' || g "
            "|| CASE WHEN g % 100 = 0 THEN ' [emulator:block]' ELSE '' END AS title, "
            f"'brand ' || (g % 97) AS brand FROM generate_series(1, {int(rows)}) AS g"
        )


if __name__ == "__main__":
    main()
