"""
### Reviews from a table, every row's status in a table, and a report scheduled on it

`flex_reviews_table` reads customer reviews with a SQL query (`input_sql` on `input_conn_id`, streamed in
chunks), enriches them on the **flex** tier (sentiment, whether a reply is needed, a topic), and upserts
**every** row into `reviews_enriched` through the same connection: answered rows with `status = 'ok'`,
rows that failed with `status = 'failed'` and their `error` (`load_failed=True`), columns in the
database's own types (`needs_reply` is a BOOLEAN, so `WHERE needs_reply` works). Reviews whose text is
empty are set aside as dead letters before any call (`on_bad_row`), not a failed run. Every run writes to
the same output folder, so a scheduled run calls only for reviews not answered yet; a review the API refused
stays `failed` without a new call (`retry_refused=True` asks again).

The table is an Airflow Asset; `flex_reviews_report` is scheduled on it and runs after each enrichment,
reading what the run did from the asset event (rows, succeeded, failed, cost) and the statuses from the
table.

- Connection: `flex_demo_sqlite` (SQLite by default; any common.sql DB-API connection works, e.g.
  PostgreSQL: set `AIRFLOW_CONN_FLEX_DEMO_SQLITE`). The first task makes the `reviews_in` table.
- Output folder: the Variable `flex_output_root` (default `/tmp/flex_output`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_flex.enrichment.assets import table_asset
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

CONN_ID = "flex_demo_sqlite"
TABLE = "reviews_enriched"
REVIEWS = [
    "Arrived broken, nobody answers my emails.",
    "Lovely kettle, boils fast and looks great.",
    "The rake lost two teeth in a week.",
    "",  # an empty review: a dead letter, not a failed run
    "Good value, would buy again.",
    "Wrong colour sent; I need an exchange please.",
]
SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "needs_reply": {"type": "boolean"},
        "topic": {"type": "string"},
    },
    "required": ["sentiment", "needs_reply", "topic"],
}

with DAG(
    "flex_reviews_table",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["gemini-flex", "example", "sql", "assets"],
):

    @task
    def make_reviews_table() -> int:
        """Create `reviews_in` with the demo reviews (replacing an earlier copy)."""
        from airflow.sdk import BaseHook

        hook = BaseHook.get_connection(CONN_ID).get_hook()
        hook.run("CREATE TABLE IF NOT EXISTS reviews_in (id TEXT PRIMARY KEY, text TEXT)")
        rows = [(f"rev-{i:03d}", text) for i, text in enumerate(REVIEWS * 5)]
        hook.insert_rows("reviews_in", rows, target_fields=["id", "text"], replace=True, replace_index="id")
        return len(rows)

    make_reviews_table() >> GeminiFlexEnrichOperator(
        task_id="enrich_reviews",
        input_sql="SELECT id, text FROM reviews_in ORDER BY id",
        input_conn_id=CONN_ID,
        key_field="id",
        # an empty review renders an empty prompt: a dead letter (on_bad_row), with no call made for it
        prompt_template="{% if row.text %}Classify this customer review: {{ row.text }}{% endif %}",
        system_instruction="You triage customer reviews for a garden and kitchen shop.",
        response_schema=SCHEMA,
        # one output for every run: the next run calls only for reviews not answered yet
        output_path="{{ var.value.get('flex_output_root', '/tmp/flex_output') }}/reviews",
        model="gemini-2.5-flash",
        sql_conn_id=CONN_ID,
        table=TABLE,  # declared as an asset: flex_reviews_report runs after each load
        load_failed=True,
        max_failed_fraction=0.25,  # the empty reviews are dead letters; the run still succeeds
    )


with DAG(
    "flex_reviews_report",
    schedule=[table_asset(CONN_ID, TABLE)],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["gemini-flex", "example", "sql", "assets"],
):

    @task
    def report(triggering_asset_events=None) -> dict:
        """Report the enrichment that triggered this run (from the asset event) and the table's statuses."""
        from airflow.sdk import BaseHook

        events = [event for events in (triggering_asset_events or {}).values() for event in events]
        latest = dict(events[-1].extra) if events else {}
        hook = BaseHook.get_connection(CONN_ID).get_hook()
        statuses = dict(hook.get_records(f"SELECT status, COUNT(*) FROM {TABLE} GROUP BY status"))
        replies = hook.get_records(f"SELECT COUNT(*) FROM {TABLE} WHERE needs_reply")[0][0]
        summary = {"run": latest, "statuses": statuses, "need_a_reply": replies}
        print(f"Reviews enriched: {summary}")
        return summary

    report()
