"""Issue 31's acceptance run: 20,000 rows by ``SELECT`` from a real PostgreSQL table, one in a hundred refused
by the API (a prompt its safety filters block), every row's status upserted into a table, and a rerun that
makes no call and adds no row. About two minutes here; it runs in make test's load group."""

from __future__ import annotations

import json

import pytest

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

ROWS = 20_000
SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"type": "string"}, "needs_reply": {"type": "boolean"}},
    "required": ["sentiment", "needs_reply"],
}
POLICY = FlexRetryPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.5, jitter=0.0, deadline=120)

pytestmark = pytest.mark.slow


def test_20000_rows_from_postgresql_every_status_in_the_table_and_a_rerun_calls_nothing(set_connection, tmp_path,
                                                                                           monkeypatch):  # fmt: skip
    from tests.postgres_server import DATABASE, USER, PostgresServer

    with PostgresServer() as server, FlexEmulator(slots=64, seed=4) as emulator:
        set_connection(host=emulator.base_url, password="scale-key")
        monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "postgres", "host": "127.0.0.1",
                           "port": server.port, "login": USER, "schema": DATABASE}))  # fmt: skip
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        warehouse = PostgresHook(postgres_conn_id="warehouse")
        warehouse.run(  # every hundredth review asks for what the API's safety filters block
            "CREATE TABLE reviews AS SELECT g AS id, 'review ' || g || CASE WHEN g % 100 = 0 "
            f"THEN ' [emulator:block]' ELSE '' END AS body FROM generate_series(1, {ROWS}) AS g"
        )

        def enrich() -> dict:
            return GeminiFlexEnrichOperator(
                task_id="enrich", input_sql="SELECT id, body FROM reviews", input_conn_id="warehouse",
                key_field="id", prompt_template="Triage this review: {{ row.body }}", response_schema=SCHEMA,
                output_path=str(tmp_path / "out"), sql_conn_id="warehouse", table="reviews_enriched",
                load_failed=True, max_failed_fraction=0.02, max_concurrency=64, retry_policy=POLICY,
            ).execute(context={})  # fmt: skip

        def statuses() -> dict:
            return dict(warehouse.get_records("SELECT status, COUNT(*) FROM reviews_enriched GROUP BY status"))

        first = enrich()
        after_first = (statuses(), warehouse.get_records(
            "SELECT COUNT(*), COUNT(DISTINCT error) FROM reviews_enriched WHERE status = 'failed' AND error LIKE "
            "'%blocked%' AND sentiment IS NULL"
        )[0])  # fmt: skip
        requests = emulator.admin.stats()["requests"]
        second = enrich()
        rerun_requests = emulator.admin.stats()["requests"] - requests
        after_second = (statuses(), warehouse.get_records("SELECT COUNT(*) FROM reviews_enriched")[0][0])
        ok_types = warehouse.get_records(
            "SELECT pg_typeof(needs_reply)::text, COUNT(*) FROM reviews_enriched WHERE status = 'ok' GROUP BY 1"
        )
    assert (first["total"], first["succeeded"], first["failed"], first["loaded_rows"]) == (ROWS, 19_800, 200, ROWS)
    assert after_first == ({"ok": 19_800, "failed": 200}, (200, 1)), "each failed row holds its error"
    assert rerun_requests == 0, "the rerun made no call"
    assert (second["skipped"], second["refused_earlier"], second["succeeded"]) == (19_800, 200, 0)
    assert after_second == ({"ok": 19_800, "failed": 200}, ROWS), "the rerun added no row"
    assert ok_types == [("boolean", 19_800)]
