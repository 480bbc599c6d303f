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


def _airflow_env(emulator: FlexEmulator, tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_GEMINI_FLEX_DEFAULT": json.dumps(
            {"conn_type": "gemini_flex", "host": emulator.base_url, "password": "k", "extra": {"initial_delay": 0.1}}
        ),
        "AIRFLOW_CONN_FLEX_DEMO_SQLITE": json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "products.db")}),
        "AIRFLOW_VAR_FLEX_OUTPUT_ROOT": str(tmp_path / "output"),
    }
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    return env


def _dags_test(dag_id: str, env: dict[str, str], *extra: str) -> str:
    """`airflow db migrate` then `airflow dags test DAG_ID`; the run's console output."""
    for args in (["db", "migrate"], ["dags", "test", dag_id, *extra]):
        result = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_sequential_agent_feeds_each_step_the_previous_output(tmp_path):
    with FlexEmulator(seed=4) as emulator:
        output = _dags_test("flex_sequential_agent", _airflow_env(emulator, tmp_path))
        calls = emulator.admin.calls()
    assert "state=success" in output
    assert [c["tier"] for c in calls] == ["flex"] * 3
    summary, profile, crm = (c["prompt"] for c in calls)
    assert summary.startswith("Summarise these account notes")
    assert "Build a customer profile from this summary:\nFlex emulator answer to: Summarise" in profile
    assert crm.startswith("Given this customer profile") and '"segment"' in crm


def test_stream_digest_writes_the_whole_answer_to_a_file(tmp_path):
    with FlexEmulator(answer_tokens=(300, 400)) as emulator:
        _dags_test("flex_stream_digest", _airflow_env(emulator, tmp_path), "2026-11-23")
    digest = tmp_path / "output" / "digests" / "2026-11-23.md"
    assert digest.read_text().startswith("Flex emulator answer to:")
    assert len(digest.read_text().split()) > 250


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
