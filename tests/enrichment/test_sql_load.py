"""Results into SQL through a common-sql connection: columns from the schema, upserted by key on reruns."""

from __future__ import annotations

import json
import sqlite3

import pytest

from airflow_provider_flex.enrichment.sql import schema_columns
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

SCHEMA = {
    "type": "object",
    "properties": {"category": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["category", "tags"],
}
POLICY = FlexRetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=0.2, jitter=0.0, deadline=60)


def _operator(tmp_path, records, **kwargs) -> GeminiFlexEnrichOperator:
    return GeminiFlexEnrichOperator(
        task_id="enrich",
        records=records,
        key_field="sku",
        prompt_template="Categorise {{ row.title }}",
        output_path=str(tmp_path / "out"),
        response_schema=SCHEMA,
        retry_policy=POLICY,
        **{"sql_conn_id": "results_db", "table": "enriched", **kwargs},
    )


def test_results_are_upserted_by_key_and_a_rerun_does_not_duplicate(connection, tmp_path, monkeypatch):
    db = tmp_path / "results.db"
    monkeypatch.setenv("AIRFLOW_CONN_RESULTS_DB", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    records = [{"sku": f"s{i}", "title": f"thing {i}"} for i in range(15)]
    first = _operator(tmp_path, records[:10]).execute(context={})
    second = _operator(tmp_path, records).execute(context={})
    assert (first["loaded_rows"], second["loaded_rows"], second["table"]) == (10, 15, "enriched")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT sku, category, tags, service_tier, route, model, cost_usd FROM enriched").fetchall()
    assert sorted(row[0] for row in rows) == sorted(r["sku"] for r in records)
    assert all(isinstance(json.loads(tags), list) and category for _, category, tags, *_ in rows)
    assert {(row[3], row[4]) for row in rows} == {("flex", "flex")} and all(row[6] > 0 for row in rows)


def test_bad_sql_settings_fail_clearly(connection, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_RESULTS_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "x.db")}))
    with pytest.raises(ValueError, match="give sql_conn_id and table together"):
        GeminiFlexEnrichOperator(
            task_id="e", records=[], key_field="k", prompt_template="x", output_path="o", sql_conn_id="results_db"
        )
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        _operator(tmp_path, [{"sku": "a", "title": "b"}], table="drop table; --").execute(context={})
    assert connection.admin.stats()["requests"] == 0, "checked before any call"


def test_columns_come_from_the_schema_or_are_the_text():
    assert schema_columns(SCHEMA) == ["category", "tags"]
    assert schema_columns(None) == ["text"]
