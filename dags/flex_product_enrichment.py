"""
### Product enrichment on the Gemini flex tier

Extract a product catalogue (a CSV shipped beside this file), enrich every row on
the **flex** tier with structured output (a category from a fixed taxonomy,
attributes, a short description), load the results into a SQL table, and report
what it cost against the same tokens on the standard tier.

- Enrichment runs in one task (`GeminiFlexEnrichOperator`): concurrent calls at the
  rate the API allows, checkpointed, resumable without paying twice.
- Load: the enrichment upserts its results by `sku` into the table through any `common.sql`
  connection (`sql_conn_id`; SQLite by default, set `AIRFLOW_CONN_FLEX_DEMO_SQLITE`): one column per
  property of the response schema (JSON text for arrays), plus served tier, route, model and cost.
- Params: `model`, `gemini_flex_conn_id`, `sql_conn_id`. Spend is capped at $5 a run (`max_cost_usd`).
- **Flex or Batch by a deadline**: `route` is `flex` (default), `batch` (every row through Gemini
  Batch API jobs, the same 50% price and a separate quota, answered within 24 hours) or `auto`:
  flex serves what it can finish within `finish_by_minutes` at the rate the quotas allow and the
  rest go into batch jobs at once. While jobs run the task defers (no worker slot); jobs are
  checkpointed, so a retry re-attaches to them instead of paying twice.
- **Vertex AI**: set `vertexai` to run on Vertex AI's Flex PayGo through `vertex_conn_id`, a
  `gemini_flex` connection in Vertex mode (extras `vertexai: true`, `project`, `location: global`
  and a service-account `key_json`, `key_path` or Application Default Credentials).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

CATALOGUE = Path(__file__).parent / "data" / "products.csv"
TAXONOMY = [
    "Garden & Outdoor",
    "Kitchen & Dining",
    "Tools & Home Improvement",
    "Toys & Games",
    "Sports & Fitness",
    "Electronics",
    "Pet Supplies",
    "Office Supplies",
]
ENRICHMENT_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": TAXONOMY},
        "attributes": {
            "type": "array",
            "maxItems": 5,
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
                "required": ["name", "value"],
            },
        },
        "short_description": {"type": "string", "maxLength": 200},
    },
    "required": ["category", "attributes", "short_description"],
}
TABLE = "enriched_products"

#: The run's day: its logical date, or when it ran for a run triggered without one (no ``ds`` then).
DAY = "{{ ds if ds is defined else dag_run.run_after.strftime('%Y-%m-%d') }}"
with DAG(
    dag_id="flex_product_enrichment",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["gemini", "flex", "enrichment"],
    params={
        "model": Param("gemini-2.5-flash-lite", type="string", description="A flex-capable Gemini model"),
        "gemini_flex_conn_id": Param("gemini_flex_default", type="string"),
        "sql_conn_id": Param("flex_demo_sqlite", type="string", description="Any common.sql DB-API connection"),
        "route": Param("flex", enum=["flex", "batch", "auto"], description="flex, batch, or auto by the deadline"),
        "finish_by_minutes": Param(60, type="number", description="With route=auto: flex's deadline, from the start"),
        "vertexai": Param(False, type="boolean", description="Call Vertex AI Flex PayGo instead of the Gemini API"),
        "vertex_conn_id": Param(
            "gemini_flex_vertex", type="string", description="A gemini_flex connection in Vertex mode"
        ),
    },
):

    @task
    def extract() -> list[dict]:
        """Read the catalogue; a production DAG would query its source table here."""
        with CATALOGUE.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    enrich = GeminiFlexEnrichOperator(
        task_id="enrich",
        records=extract(),
        key_field="sku",
        prompt_template=(
            "Categorise this product into one of: " + "; ".join(TAXONOMY) + ". "
            "List up to five attributes and write a one-sentence description.\n"
            "Title: {{ row.title }}\nBrand: {{ row.brand }}\nPrice: EUR {{ row.price_eur }}\n"
            "Description: {{ row.description }}"
        ),
        response_schema=ENRICHMENT_SCHEMA,
        model="{{ params.model }}",
        output_path="{{ var.value.get('flex_output_root', '/tmp/airflow-flex') }}/product_enrichment/" + DAY,
        gemini_flex_conn_id="{{ params.vertex_conn_id if params.vertexai else params.gemini_flex_conn_id }}",
        max_cost_usd=5.0,
        max_failed_fraction=0.05,
        sql_conn_id="{{ params.sql_conn_id }}",  # results upserted by sku into TABLE once the run succeeds
        table=TABLE,
        route="{{ params.route }}",
        finish_by="{{ params.finish_by_minutes * 60 }}",
        batch_poll_interval=1.0,  # seconds: the emulator's jobs end in seconds; a day-long real job wants ~60
        deferrable=True,
    )

    @task
    def report(summary: dict) -> dict:
        """Log rows, failures, the cost per route and what the same tokens would cost on standard."""
        cost, standard_cost = summary["cost_usd"], summary["standard_cost_usd"]
        by_route = summary["rows_by_route"]
        print(
            f"Enriched {summary['succeeded']} of {summary['total']} products ({summary['failed']} failed, "
            f"{summary['skipped']} already done; {by_route['flex']} on flex, {by_route['batch']} through batch), "
            f"loaded {summary['loaded_rows']} rows into {TABLE}. Cost ${cost:.4f}; the same tokens on standard: "
            f"${standard_cost:.4f} (saved ${standard_cost - cost:.4f})."
        )
        return summary

    report(enrich.output)
