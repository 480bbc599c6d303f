"""The example DAGs in dags/: they import cleanly and run end to end on a real Airflow against the emulator."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from airflow_provider_flex.emulator import FlexEmulator

DAGS = Path(__file__).resolve().parents[2] / "dags"
AIRFLOW = Path(sys.executable).parent / "airflow"


def test_dags_folder_imports_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert "flex_product_enrichment" in bag.dag_ids
    for dag_id, dag in bag.dags.items():
        assert dag.doc_md, f"{dag_id} needs doc_md"


def test_product_enrichment_loads_every_product_with_the_airflow_cli(tmp_path):
    home = tmp_path / "airflow"
    database = tmp_path / "products.db"
    with FlexEmulator(slots=4, service_time=(0.01, 0.05), rps=50, preempt_rate=0.2, seed=3) as emulator:
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_GEMINI_FLEX_DEFAULT": json.dumps(
                {
                    "conn_type": "gemini_flex",
                    "host": emulator.base_url,
                    "password": "k",
                    "extra": {"initial_delay": 0.1},
                }
            ),
            "AIRFLOW_CONN_FLEX_DEMO_SQLITE": json.dumps({"conn_type": "sqlite", "host": str(database)}),
            "AIRFLOW_VAR_FLEX_OUTPUT_ROOT": str(tmp_path / "output"),
        }
        env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
        for args in (["db", "migrate"], ["dags", "test", "flex_product_enrichment"]):
            result = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        stats = emulator.admin.stats()
    assert "Enriched 100 of 100 products (0 failed" in result.stdout
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT sku, category, attributes, service_tier FROM enriched_products").fetchall()
    assert len(rows) == 100 == len({row[0] for row in rows})
    from dags.flex_product_enrichment import TAXONOMY

    assert all(category in TAXONOMY and tier == "flex" for _, category, _, tier in rows)
    assert all(isinstance(json.loads(attributes), list) for _, _, attributes, _ in rows)
    assert set(stats["calls_by_tier"]) == {"flex"}
    assert stats["calls"]["flex"]["ok"] == 100
