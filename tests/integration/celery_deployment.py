"""The CeleryExecutor deployment the Celery test and `benchmarks/celery_sharded.py` both run, built in one place.

PostgreSQL (the metadata database) and one redis-server (the Celery broker in db 0, the shared quota
store in db 1, connection ``flex_redis``) around an :class:`~tests.deployment.AirflowDeployment` with
named Celery workers; each worker's tasks name it as their host (``worker_hostname.py``). Also the
catalogue both feed to ``flex_sharded_enrichment``: one row per SKU, named in its prompt.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.deployment import AirflowDeployment, CeleryShape, link_dags
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer

REPO_DAGS = Path(__file__).resolve().parents[2] / "dags"
#: A SKU as the catalogue writes it; every prompt of the sharded DAG names its row's SKU.
SKU = re.compile(r"SKU-\d{5}")


@contextmanager
def celery_deployment(
    root: Path, emulator: Any, api_key: str, workers: tuple[str, ...] = ("w1", "w2"), **settings: str
) -> Iterator[AirflowDeployment]:
    """The repo's DAGs on CeleryExecutor against ``emulator``, workers of 4 slots; ``settings`` add to the env."""
    dags = link_dags(root / "dags", REPO_DAGS.iterdir())
    path_dir = root / "pythonpath"
    path_dir.mkdir()
    shutil.copy(Path(__file__).with_name("worker_hostname.py"), path_dir)
    with PostgresServer() as database, RedisServer(root) as redis_server:
        env = {
            "AIRFLOW_CONN_GEMINI_FLEX_DEFAULT": emulator.connection_json(api_key, initial_delay=0.2),
            "AIRFLOW_CONN_FLEX_REDIS": json.dumps(
                {"conn_type": "redis", "host": "127.0.0.1", "port": redis_server.port, "extra": {"db": 1}}
            ),
            "AIRFLOW_CONN_FLEX_DEMO_SQLITE": json.dumps({"conn_type": "sqlite", "host": str(root / "demo.db")}),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_hostname.hostname",
            "PYTHONPATH": str(path_dir),
            **settings,
        }
        shape = CeleryShape(database, f"redis://127.0.0.1:{redis_server.port}/0", workers, concurrency=4)
        with AirflowDeployment(root / "home", dags, env, celery=shape) as airflow:
            yield airflow


def write_catalogue(path: Path, first: int, rows: int) -> set[str]:
    """A product catalogue of ``rows`` rows whose prompts name their SKU; the SKUs."""
    skus = [f"SKU-{first + i:05d}" for i in range(rows)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "title", "brand", "price_eur", "description"])
        for sku in skus:
            writer.writerow([sku, f"Product {sku}", "Acme", "9.99", f"Item {sku}, ships in 2-3 days."])
    return set(skus)
