"""Runs the spend view must tell apart: a failed run that spent, and a DAG that never calls Gemini.

``flex_partial_spend``: an enrichment and a ``@task.gemini_flex`` call answer, then a check fails, so
the run fails with its spend already made; a report task repeats the enrichment's figures (as the
example DAGs' reports do) and must not be counted twice. ``flex_no_provider``: no flex task at all.
``flex_failed_before_call``: an enrichment whose input file is missing fails before any call (listed
with $0). ``flex_cached_run``: an enrichment sharing a long instruction makes its own context cache
(cached tokens, what they saved, the cache's storage).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

with DAG("flex_partial_spend", start_date=datetime(2026, 1, 1), schedule=None, catchup=False):

    @task
    def rows() -> list[dict]:
        return [{"id": f"r{i}", "text": f"review number {i}: fine"} for i in range(6)]

    enriched = GeminiFlexEnrichOperator(
        task_id="enrich",
        records=rows(),
        key_field="id",
        prompt_template="Sentiment of: {{ row.text }}",
        output_path="{{ var.value.flex_output_root }}/partial/{{ run_id }}",
        model="gemini-2.5-flash",
    )

    @task.gemini_flex(model="gemini-2.5-flash")
    def headline() -> str:
        return "Write a headline for six reviews."

    @task
    def report(summary: dict) -> dict:
        return dict(summary)  # the enrichment's figures again: not a provider task

    @task
    def check(_: dict, __: dict) -> None:
        raise ValueError("the reviews need a human look")

    check(report(enriched.output), headline())

with DAG("flex_no_provider", start_date=datetime(2026, 1, 1), schedule=None, catchup=False):

    @task
    def plain() -> dict:
        return {"cost_usd": 1.0, "standard_cost_usd": 2.0, "rows_by_route": {"flex": 1}}

    plain()

with DAG("flex_failed_before_call", start_date=datetime(2026, 1, 1), schedule=None, catchup=False):
    GeminiFlexEnrichOperator(
        task_id="enrich",
        input_path="{{ var.value.flex_output_root }}/no-such-input.jsonl",
        key_field="id",
        prompt_template="Sentiment of: {{ row.text }}",
        output_path="{{ var.value.flex_output_root }}/never/{{ run_id }}",
        model="gemini-2.5-flash",
        retries=0,
    )

with DAG("flex_cached_run", start_date=datetime(2026, 1, 1), schedule=None, catchup=False):
    GeminiFlexEnrichOperator(
        task_id="enrich",
        records=[{"id": f"r{i}", "text": f"review number {i}: fine"} for i in range(12)],
        key_field="id",
        prompt_template="Sentiment of: {{ row.text }}",
        system_instruction=" ".join(f"rule{i} applies." for i in range(700)),
        output_path="{{ var.value.flex_output_root }}/cached/{{ run_id }}",
        model="gemini-2.5-flash",
    )
