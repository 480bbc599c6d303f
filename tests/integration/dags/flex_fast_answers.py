"""Deferred flex calls that answer in under a second: 24 mapped and 4 not, as a busy deployment runs them.

A fast answer is the common case when flex capacity is free, and the one that used
to race the scheduler (apache/airflow#71580): the trigger fired before the
scheduler had seen the deferring worker exit. Every prompt carries the run id, so
the emulator's call log shows whether any call was sent twice.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_flex.operators.gemini_flex import GeminiFlexGenerateContentOperator

MAPPED = 24
SINGLE = 4

with DAG(
    "flex_fast_answers",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    params={"topic": "quotas"},
    doc_md=__doc__,
    max_active_tasks=64,
):

    @task
    def questions(run_id: str | None = None) -> list[str]:
        return [f"Fast mapped question {i} about quotas in {run_id}" for i in range(MAPPED)]

    mapped = GeminiFlexGenerateContentOperator.partial(
        task_id="mapped", model="gemini-2.5-flash", deferrable=True
    ).expand(contents=questions())

    singles = [
        GeminiFlexGenerateContentOperator(
            task_id=f"single_{i}",
            contents=f"Fast single question {i} about {{{{ params.topic }}}} in {{{{ run_id }}}}",
            system_instruction="Answer in one line for {{ dag.dag_id }}.",
            model="gemini-2.5-flash",
            deferrable=True,
        )
        for i in range(SINGLE)
    ]

    @task
    def collect(mapped_results: list[dict], *single_results: dict) -> int:
        results = [*mapped_results, *single_results]
        assert all(isinstance(r, dict) and r["text"] and r["service_tier"] == "flex" for r in results), results
        return len(results)

    collect(mapped.output, *[single.output for single in singles])
