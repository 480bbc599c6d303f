"""docs/getting-started.md's DAG runs as written, with the page's connection values, under `airflow dags test`."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path

from airflow_provider_flex.emulator import FlexEmulator
from tests.deployment import AIRFLOW, airflow_env

PAGE = Path(__file__).resolve().parents[2] / "docs" / "getting-started.md"


def _page_block(language: str, contains: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)
    return next(block for block in blocks if contains in block)


def test_the_getting_started_dag_runs_with_the_pages_connections(tmp_path):
    dags = tmp_path / "my_dags"
    dags.mkdir()
    (dags / "ticket_triage.py").write_text(_page_block("python", 'DAG("ticket_triage"'))
    exports = _page_block("bash", "AIRFLOW_CONN_GEMINI_FLEX_DEFAULT")
    conns = dict(re.findall(r"export (AIRFLOW_CONN_\w+)='(.*?)'", exports))
    db = tmp_path / "flex-demo.db"
    with FlexEmulator(port=0, seed=1) as emulator:
        gemini = json.loads(conns["AIRFLOW_CONN_GEMINI_FLEX_DEFAULT"])
        assert gemini["host"] == "http://127.0.0.1:8787"  # the page's port; this test's emulator has its own
        gemini["host"] = emulator.base_url
        sqlite = json.loads(conns["AIRFLOW_CONN_FLEX_DEMO_SQLITE"])
        assert sqlite == {"conn_type": "sqlite", "host": "/tmp/flex-demo.db"}
        env = airflow_env(
            tmp_path / "airflow",
            dags,
            AIRFLOW_CONN_GEMINI_FLEX_DEFAULT=json.dumps(gemini),
            AIRFLOW_CONN_FLEX_DEMO_SQLITE=json.dumps({**sqlite, "host": str(db)}),
            AIRFLOW_VAR_FLEX_OUTPUT_ROOT=str(tmp_path / "output"),
        )
        for args in (["db", "migrate"], ["dags", "test", "ticket_triage"]):
            result = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        calls = emulator.admin.calls()
    assert "state=success" in result.stdout
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, priority, team, service_tier FROM ticket_triage").fetchall()
    assert len(rows) == 30 and {row[3] for row in rows} == {"flex"}
    assert any(call["prompt"].startswith("Write a two-line digest") for call in calls)
