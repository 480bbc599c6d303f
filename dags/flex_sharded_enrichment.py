"""
### Sharded enrichment on the Gemini flex tier, one quota for every worker

A large input (JSONL or CSV, local or object storage: `s3://`, `gs://`, `file://`) is
split into shards of `rows_per_shard` rows; each shard is enriched by one mapped
`GeminiFlexEnrichOperator` task, so the work spreads over Celery or Kubernetes
workers; a final task merges the shards' summaries (rows, failures, cost, 429s).

- **One quota for all**: a project's quota is per project and model, whichever worker
  calls. With `rate_limit_redis_conn_id` (a `redis` connection of
  apache-airflow-providers-redis) every shard paces through one Redis state, so
  together they use the quota fully without 429 storms. Leave it empty to pace each
  worker alone (then split the quota: `requests_per_minute` per shard).
- **Resumable**: shards are written once per input (a manifest fingerprints it); each
  mapped task writes its own output under `<output_root>/sharded/<ds>/enriched/shard-<n>/`,
  so a rerun resumes every shard from its checkpoints without paying twice.
- **A lost worker**: a shard's task has `retries=2`; when its worker dies, Airflow fails it after the
  heartbeat timeout and runs it again (another worker), and it resumes from its checkpoints.
- Params: `input_path` (default: the 100-product catalogue beside this file),
  `rows_per_shard`, `model`, `gemini_flex_conn_id`, `rate_limit_redis_conn_id`,
  `requests_per_minute` (0: learned from the API's 429s).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

CATALOGUE = Path(__file__).parent / "data" / "products.csv"
#: The run's day: its logical date, or when it ran for a run triggered without one (no ``ds`` then).
DAY = "{{ ds if ds is defined else dag_run.run_after.strftime('%Y-%m-%d') }}"
OUTPUT_ROOT = "{{ var.value.get('flex_output_root', '/tmp/airflow-flex') }}/sharded/" + DAY
TAGS_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string"},
        "tags": {"type": "array", "maxItems": 5, "items": {"type": "string"}},
    },
    "required": ["category", "tags"],
}

with DAG(
    dag_id="flex_sharded_enrichment",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["gemini", "flex", "enrichment"],
    params={
        "input_path": Param(str(CATALOGUE), type="string", description="JSONL or CSV; local or object storage"),
        "rows_per_shard": Param(25, type="integer", minimum=1),
        "model": Param("gemini-2.5-flash-lite", type="string"),
        "gemini_flex_conn_id": Param("gemini_flex_default", type="string"),
        "rate_limit_redis_conn_id": Param("", type="string", description="A redis connection; empty: pace alone"),
        "requests_per_minute": Param(0, type="integer", minimum=0, description="The project's quota; 0: learn"),
    },
):

    @task
    def split(params: dict | None = None, ds: str | None = None, dag_run=None) -> list[str]:
        """Write the input as shards once; a rerun gets the same shards back."""
        from airflow.sdk import Variable

        from airflow_provider_flex.enrichment.shards import split_into_shards

        root = Variable.get("flex_output_root", default="/tmp/airflow-flex")
        day = ds or dag_run.run_after.strftime("%Y-%m-%d")
        return split_into_shards(params["input_path"], f"{root}/sharded/{day}/shards", params["rows_per_shard"])

    enrich = GeminiFlexEnrichOperator.partial(
        task_id="enrich_shard",
        key_field="sku",
        prompt_template="Categorise and tag this product: {{ row.title }} by {{ row.brand }}: {{ row.description }}",
        response_schema=TAGS_SCHEMA,
        model="{{ params.model }}",
        gemini_flex_conn_id="{{ params.gemini_flex_conn_id }}",
        rate_limit_redis_conn_id="{{ params.rate_limit_redis_conn_id }}",
        requests_per_minute="{{ params.requests_per_minute }}",
        output_path=OUTPUT_ROOT + "/enriched/shard-{{ '%05d' % ti.map_index }}",
        max_concurrency=16,
        max_failed_fraction=0.05,
        # a shard lost with its worker runs again on another and resumes from its checkpoints
        retries=2,
        retry_delay=timedelta(seconds=15),
    ).expand(input_path=split())

    @task
    def merge(summaries: list[dict], ds: str | None = None, dag_run=None) -> dict:
        """Add the shards up and keep the run's summary beside its outputs."""
        from airflow.sdk import Variable

        from airflow_provider_flex.enrichment.shards import merge_summaries

        merged = merge_summaries(summaries)
        root = Variable.get("flex_output_root", default="/tmp/airflow-flex")
        path = Path(root) / "sharded" / (ds or dag_run.run_after.strftime("%Y-%m-%d")) / "summary.json"
        if "://" not in root:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(merged, indent=1))
        print(
            f"Sharded enrichment: {merged['succeeded']} of {merged['total']} rows enriched over {merged['shards']} "
            f"shards ({merged['failed']} failed, {merged['skipped']} already done), {merged['rate_limited_429']} "
            f"429s, flex cost ${merged['cost_usd']:.4f}."
        )
        return merged

    merge(enrich.output)
