"""The compatibility matrix's DAG: what every supported Airflow release must run.

A deferrable generate task (it ends in the triggerer), the same call on a worker with a JSON Schema,
``@task.gemini_flex`` and a 40-row enrichment with a pydantic model class as their schema, then a task
that checks each result's shape and writes what it saw to ``$FLEX_SMOKE_REPORT`` for the test to read.
"""

from __future__ import annotations

import json
import os

import pendulum
from airflow.sdk import DAG, task
from pydantic import BaseModel

from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator, GeminiFlexGenerateContentOperator

MODEL = "gemini-2.5-flash-lite"
ROWS = [{"id": f"row-{i:02d}", "name": f"item number {i}"} for i in range(40)]
SCHEMA = {
    "type": "object",
    "properties": {"colour": {"type": "string"}, "size": {"type": "integer"}},
    "required": ["colour", "size"],
}


class Described(BaseModel):
    colour: str
    size: int


with DAG(
    dag_id="flex_compat_smoke",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["gemini", "flex", "compatibility"],
):
    in_triggerer = GeminiFlexGenerateContentOperator(
        task_id="deferred_generate",
        contents="Name a colour for the run {{ run_id }}",
        model=MODEL,
        deferrable=True,
    )
    on_worker = GeminiFlexGenerateContentOperator(
        task_id="worker_generate",
        contents="Name a size",
        model=MODEL,
        response_schema=SCHEMA,
        deferrable=False,
    )

    @task.gemini_flex(model=MODEL, response_schema=Described)
    def decorated(subject: str) -> str:
        return f"Write one line about {subject}"

    enrich = GeminiFlexEnrichOperator(
        task_id="enrich",
        records=ROWS,
        key_field="id",
        prompt_template="Describe {{ row.name }} with a colour and a size",
        response_schema=Described,
        model=MODEL,
        output_path=os.environ.get("FLEX_SMOKE_OUTPUT", "/tmp/flex-compat-smoke"),
    )

    @task
    def check(deferred: dict, worker: dict, written: dict, summary: dict) -> None:
        """Check every result's shape (an XCom that arrives as JSON text fails here) and report it."""
        for name, result in (("deferred_generate", deferred), ("worker_generate", worker), ("decorated", written)):
            assert isinstance(result, dict), f"{name}: {type(result).__name__} {result!r:.200}"
            assert result["text"] and result["service_tier"] == "flex", f"{name}: {result!r:.300}"
        for result in (worker, written):
            assert isinstance(result["parsed"], dict) and set(result["parsed"]) == {"colour", "size"}, result
        assert isinstance(summary, dict) and summary["succeeded"] == len(ROWS) and summary["failed"] == 0, summary
        report = {
            "deferred": deferred["text"],
            "worker": worker["parsed"],
            "decorated": written["text"],
            "succeeded": summary["succeeded"],
            "cost_usd": summary["cost_usd"],
        }
        with open(os.environ["FLEX_SMOKE_REPORT"], "w") as handle:
            json.dump(report, handle)

    check(in_triggerer.output, on_worker.output, decorated("the weather"), enrich.output)
