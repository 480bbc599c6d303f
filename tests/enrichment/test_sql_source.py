"""Rows from a SQL query (``input_sql``): streamed from SQLite and a real PostgreSQL, checked before any call."""

from __future__ import annotations

import json
import sqlite3

import pytest

from airflow_provider_flex.enrichment.records import EnrichInputError
from airflow_provider_flex.enrichment.sql_source import buffers_whole_result, iter_sql_rows
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

POLICY = FlexRetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=0.2, jitter=0.0, deadline=60)


def _operator(tmp_path, **kwargs) -> GeminiFlexEnrichOperator:
    return GeminiFlexEnrichOperator(
        task_id="enrich", key_field="id", prompt_template="Categorise {{ row.title }} ({{ row.price }})",
        output_path=str(tmp_path / "out"), retry_policy=POLICY, input_conn_id="source_db", **kwargs,
    )  # fmt: skip


def _results(tmp_path) -> list[dict]:
    out = tmp_path / "out"
    return [json.loads(line) for f in sorted(out.glob("results-*.jsonl")) for line in f.read_text().splitlines()]


@pytest.fixture
def sqlite_source(tmp_path, monkeypatch):
    db = tmp_path / "source.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, title TEXT, price REAL)")
        conn.executemany("INSERT INTO items VALUES (?, ?, ?)", [(i, f"thing {i}", i * 1.5) for i in range(1, 41)])
    monkeypatch.setenv("AIRFLOW_CONN_SOURCE_DB", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    return db


def test_a_query_is_the_input_and_a_rerun_skips_the_answered_keys(connection, tmp_path, sqlite_source):
    first = _operator(tmp_path, input_sql="SELECT id, title, price FROM items WHERE id <= 30").execute(context={})
    calls = connection.admin.stats()["requests"]
    second = _operator(tmp_path, input_sql="SELECT id, title, price FROM items").execute(context={})
    assert (first["succeeded"], second["succeeded"], second["skipped"]) == (30, 10, 30)
    assert connection.admin.stats()["requests"] == calls + 10, "the rerun called for the 10 new rows only"
    assert sorted(int(r["key"]) for r in _results(tmp_path)) == list(range(1, 41))
    assert any("(15.0)" in call["prompt"] for call in connection.admin.calls()), "columns are the row's fields"


def test_a_failing_query_a_missing_key_column_or_a_repeated_key_fails_before_any_call(
    connection, tmp_path, sqlite_source
):
    with pytest.raises(EnrichInputError, match="input_sql on 'source_db' failed: OperationalError: no such table"):
        _operator(tmp_path, input_sql="SELECT * FROM nowhere").execute(context={})
    with pytest.raises(EnrichInputError, match="row 1 has no value for key_field 'id'"):
        _operator(tmp_path, input_sql="SELECT title, price FROM items").execute(context={})
    doubled = "SELECT id, title, price FROM items UNION ALL SELECT 7, 'again', 1.0"
    with pytest.raises(EnrichInputError, match="duplicate key '7' in rows 7 and 41"):
        _operator(tmp_path, input_sql=doubled, on_duplicate_key="fail").execute(context={})
    with pytest.raises(ValueError, match="input_sql needs input_conn_id"):
        GeminiFlexEnrichOperator(
            task_id="e", key_field="id", prompt_template="x", output_path="o", input_sql="SELECT 1"
        )
    with pytest.raises(ValueError, match="give one of records, input_path and input_sql, not more"):
        _operator(tmp_path, input_sql="SELECT 1", records=[])
    assert connection.admin.stats()["requests"] == 0


def test_a_real_postgresql_query_streams_through_a_server_side_cursor(connection, tmp_path, monkeypatch):
    from tests.postgres_server import DATABASE, USER, PostgresServer

    with PostgresServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_SOURCE_DB", json.dumps({"conn_type": "postgres", "host": "127.0.0.1",
                           "port": server.port, "login": USER, "schema": DATABASE}))  # fmt: skip
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        hook = PostgresHook(postgres_conn_id="source_db")
        hook.run("CREATE TABLE items AS SELECT g AS id, 'thing ' || g AS title, g * 1.5 AS price "
                 "FROM generate_series(1, 2500) AS g")  # fmt: skip
        chunks = list(iter_sql_rows("source_db", "SELECT id, title FROM items ORDER BY id", chunk_rows=1000))
        summary = _operator(tmp_path, input_sql="SELECT id, title, price FROM items WHERE id <= 60",
                            max_concurrency=8).execute(context={})  # fmt: skip
        cursors = hook.get_records("SELECT count(*) FROM pg_cursors")  # no cursor left open by this session
    assert [number for number, _ in chunks] == list(range(1, 2501)) and chunks[-1][1] == {
        "id": 2500,
        "title": "thing 2500",
    }
    assert summary["succeeded"] == 60 and cursors == [(0,)]


def test_a_mysql_connection_without_a_streaming_cursor_is_named_as_holding_the_whole_result():
    assert buffers_whole_result("mysql", {}) and buffers_whole_result("mysql", {"cursor": "dictcursor"})
    assert not buffers_whole_result("mysql", {"cursor": "SSCursor"})
    assert not buffers_whole_result("postgres", {}) and not buffers_whole_result("sqlite", {})
