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
        retry_policy=POLICY,
        **{"sql_conn_id": "results_db", "table": "enriched", "response_schema": SCHEMA, **kwargs},
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


TYPED = {
    "type": "object",
    "properties": {
        "needs_reply": {"type": "boolean"},
        "stars": {"type": "integer"},
        "score": {"type": "number"},
        "label": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "detail": {"type": "object", "properties": {"why": {"type": "string"}}, "required": ["why"]},
    },
    "required": ["needs_reply", "stars", "score", "label", "tags", "detail"],
}


def _typed_run(tmp_path, conn_id: str, records: list[dict], **kwargs) -> dict:
    return _operator(tmp_path, records, response_schema=TYPED, sql_conn_id=conn_id, table="reviews",
                     load_failed=True, max_failed_fraction=0.5, max_concurrency=1, **kwargs).execute(context={})  # fmt: skip


def test_every_rows_status_and_natural_types_on_sqlite(connection, tmp_path, monkeypatch):
    db = tmp_path / "results.db"
    monkeypatch.setenv("AIRFLOW_CONN_TYPED_DB", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    records = [{"sku": f"s{i}", "title": f"thing {i}"} for i in range(10)]
    connection.admin.inject("invalid_argument", count=2)  # the first two rows are refused: dead letters
    first = _typed_run(tmp_path, "typed_db", records)
    assert (first["succeeded"], first["failed"], first["loaded_rows"]) == (8, 2, 10)
    with sqlite3.connect(db) as conn:
        by_status = dict(conn.execute("SELECT status, COUNT(*) FROM reviews GROUP BY status").fetchall())
        failed = conn.execute("SELECT sku, error, label FROM reviews WHERE status = 'failed'").fetchall()
        replied = conn.execute("SELECT COUNT(*) FROM reviews WHERE needs_reply OR NOT needs_reply").fetchone()[0]
        kinds = conn.execute(
            "SELECT typeof(needs_reply), typeof(stars), typeof(score), typeof(label), json_type(tags), "
            "json_type(detail) FROM reviews WHERE status = 'ok' LIMIT 1"
        ).fetchone()
    assert by_status == {"ok": 8, "failed": 2}
    assert all(error and label is None for _, error, label in failed), "a failed row says why, with no answer"
    assert replied == 8, "WHERE needs_reply works: booleans are 1/0, not the text 'True'"
    assert kinds == ("integer", "integer", "real", "text", "array", "object")
    calls = connection.admin.stats()["requests"]
    second = _typed_run(tmp_path, "typed_db", records)  # refused as they stand: carried over without a call
    assert (second["succeeded"], second["failed"], second["refused_earlier"]) == (0, 2, 2)
    assert connection.admin.stats()["requests"] == calls
    with sqlite3.connect(db) as conn:
        assert dict(conn.execute("SELECT status, COUNT(*) FROM reviews GROUP BY status").fetchall()) == by_status
    third = _typed_run(tmp_path, "typed_db", records, retry_refused=True)  # asked again: answered this time
    assert (third["succeeded"], third["skipped"]) == (2, 8)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status, COUNT(*) FROM reviews GROUP BY status").fetchall() == [("ok", 10)]
        assert conn.execute("SELECT COUNT(*) FROM reviews WHERE error IS NOT NULL").fetchone()[0] == 0


def test_natural_types_on_a_real_postgresql(connection, tmp_path, monkeypatch):
    from tests.postgres_server import DATABASE, USER, PostgresServer

    records = [{"sku": f"s{i}", "title": f"thing {i}"} for i in range(6)]
    with PostgresServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_TYPED_PG", json.dumps({"conn_type": "postgres", "host": "127.0.0.1",
                           "port": server.port, "login": USER, "schema": DATABASE}))  # fmt: skip
        connection.admin.inject("invalid_argument", count=1)
        summary = _typed_run(tmp_path, "typed_pg", records)
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        hook = PostgresHook(postgres_conn_id="typed_pg")
        types = dict(hook.get_records(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'reviews'"
        ))  # fmt: skip
        statuses = dict(hook.get_records("SELECT status, COUNT(*) FROM reviews GROUP BY status"))
        flagged = hook.get_records("SELECT COUNT(*) FROM reviews WHERE needs_reply IS NOT NULL")[0][0]
        detail = hook.get_records("SELECT jsonb_typeof(detail), jsonb_typeof(tags) FROM reviews WHERE status = 'ok'")
    assert summary["loaded_rows"] == 6 and statuses == {"ok": 5, "failed": 1}
    assert (types["needs_reply"], types["stars"], types["score"]) == ("boolean", "bigint", "double precision")
    assert (types["label"], types["tags"], types["detail"]) == ("text", "jsonb", "jsonb")
    assert flagged == 5 and set(detail) == {("object", "array")}
