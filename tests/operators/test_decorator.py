"""``@task.gemini_flex`` in a DAG file under dag.test(): the function's prompt, the generate operator's result."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("deferrable", [False, True])
def test_the_decorated_function_returns_the_prompt_and_the_task_returns_the_result(
    connection, run_dag_file, deferrable
):
    dag_id = f"flex_decorated_{'deferred' if deferrable else 'worker'}"
    dag_run = run_dag_file(
        f"""
        from datetime import datetime

        from airflow.sdk import DAG, task

        SCHEMA = {{
            "type": "object",
            "properties": {{"priority": {{"type": "string", "enum": ["low", "high"]}}}},
            "required": ["priority"],
        }}

        with DAG({dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1)):

            @task
            def ticket() -> dict:
                return {{"id": 7, "text": "the printer is on fire"}}

            @task.gemini_flex(
                model="gemini-2.5-flash", response_schema=SCHEMA, system_instruction="Be terse.",
                deferrable={deferrable},
            )
            def triage(ticket: dict) -> str:
                return f"Triage ticket {{ticket['id']}}: {{ticket['text']}}"

            @task
            def check(result: dict) -> None:
                assert result["parsed"]["priority"] in ("low", "high"), result
                assert result["service_tier"] == "flex" and result["cost_usd"] > 0, result
                assert abs(result["standard_cost_usd"] - 2 * result["cost_usd"]) < 1e-9, result

            check(triage(ticket()))
        """,
        dag_id,
    )
    assert dag_run.state == "success"
    calls = connection.admin.calls()
    assert len(calls) == 1 and calls[0]["prompt"].startswith("Be terse.") and "Triage ticket 7" in calls[0]["prompt"]
    assert calls[0]["tier"] == "flex"


def test_the_decorator_is_registered_through_the_provider_info():
    from airflow.sdk import task
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    from airflow_provider_flex.decorators.gemini_flex import gemini_flex_task

    assert task.gemini_flex is gemini_flex_task
    assert "gemini_flex" in ProvidersManagerTaskRuntime().taskflow_decorators


def test_the_decorated_task_names_a_cache(connection, run_dag_file):
    from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook

    instruction = " ".join(f"rule{i} applies." for i in range(700))
    cache = GeminiFlexHook().caches.create(model="gemini-2.5-flash", system_instruction=instruction, ttl_s=600)
    dag_id = "flex_decorated_cached"
    dag_run = run_dag_file(
        f"""
        from datetime import datetime

        from airflow.sdk import DAG, task

        with DAG({dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1)):

            @task.gemini_flex(model="gemini-2.5-flash", cached_content={cache.name!r})
            def judge() -> str:
                return "Judge: rake"

            @task
            def check(result: dict) -> None:
                assert result["usage"]["cached_tokens"] == {cache.tokens}, result

            check(judge())
        """,
        dag_id,
    )
    assert dag_run.state == "success"
    (call,) = connection.admin.calls()
    assert call["prompt"].startswith("rule0 applies.")
