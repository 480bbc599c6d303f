"""common.ai's LLMBatchOperator on Gemini's Batch API through this provider's adapter, against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.emulator.batch import BatchSettings
from tests.hooks.conftest import API_KEY

pytest.importorskip("airflow.providers.common.ai", reason="the common-ai extra is part of `make test`'s install")


def test_the_entry_points_give_common_ai_this_adapter_for_gemini_model_ids():
    from airflow.providers.common.ai.batch import dispatch

    from airflow_provider_flex.integrations.common_ai import GeminiFlexBatchAdapter, GeminiFlexLegacyBatchAdapter

    assert dispatch.get_adapter_class("gemini_flex", "google:gemini-2.5-flash") is GeminiFlexBatchAdapter
    assert dispatch.get_adapter_class("gemini_flex", "google-gla:gemini-2.5-flash") is GeminiFlexLegacyBatchAdapter
    assert dispatch.get_adapter_class("pydanticai", "google:gemini-2.5-flash") is GeminiFlexBatchAdapter


def _run(run_dag_file, tmp_path: Path, dag_id: str, output_type: str) -> None:
    result_path = tmp_path / "results"
    dag_run = run_dag_file(
        f"""
        from datetime import datetime

        from airflow.providers.common.ai.operators.llm_batch import LLMBatchOperator
        from airflow.sdk import DAG
        from pydantic import BaseModel


        class Verdict(BaseModel):
            category: str


        with DAG({dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1)):
            LLMBatchOperator(
                task_id="classify",
                requests=[f"Classify ticket {{i}}: the printer is on fire" for i in range(6)],
                result_path={str(result_path)!r},
                llm_conn_id="gemini_flex_default",
                model_id="google:gemini-2.5-flash",
                system_prompt="Answer briefly.",
                output_type={output_type},
                poll_interval=30,
                deferrable=False,
            )
        """,
        dag_id,
    )
    assert dag_run.state == "success"
    return result_path


@pytest.mark.parametrize("output_type", ["str", "Verdict"])
def test_llm_batch_operator_runs_on_the_emulators_batch_api(set_connection, run_dag_file, tmp_path, output_type):
    with FlexEmulator(seed=2, batch=BatchSettings(turnaround_s=0.0, shuffle=True)) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        result_path = _run(run_dag_file, tmp_path, f"common_ai_batch_{output_type.lower()}", output_type)
        jobs = emulator.admin.batches()
        flex_calls = emulator.admin.stats()["requests"]
    assert len(jobs) == 1 and jobs[0]["requests"] == 6 and flex_calls == 0
    (results_file,) = result_path.glob("*.jsonl")
    landed = [json.loads(line) for line in results_file.read_text().splitlines() if line.strip()]
    assert sorted(row["index"] for row in landed) == list(range(6)), "shuffled answers matched by key"
    assert {row["status"] for row in landed} == {"success"}
    for row in landed:
        if output_type == "str":
            assert f"ticket {row['index']} " in row["output"], "each answer belongs to its own request"
        else:
            assert isinstance(row["output"]["category"], str)
        assert row["usage"]["input_tokens"] > 0 and row["model"] == "gemini-2.5-flash"
    assert API_KEY not in results_file.read_text() and API_KEY not in json.dumps(jobs)


def test_an_orphaned_job_is_found_by_its_task_instance_and_input_only(connection):
    from airflow.providers.common.ai.batch.output_schema import build_output_spec

    from airflow_provider_flex.integrations.common_ai import GeminiFlexBatchAdapter

    adapter = GeminiFlexBatchAdapter(api_key=API_KEY, base_url=connection.base_url)
    spec = build_output_spec(str)
    submitted = adapter.submit(
        [{"prompt": "hello"}, {"prompt": "again"}],
        model="gemini-2.5-flash",
        idempotency_key="0123456789abcdef",
        input_fingerprint="f" * 64,
        output_spec=spec,
    )
    found = adapter.find_orphaned_batch("0123456789abcdef", "f" * 64, "2026-01-01T00:00:00+00:00")
    assert found == submitted.batch_id
    assert adapter.find_orphaned_batch("0123456789abcdef", "e" * 64, "2026-01-01T00:00:00+00:00") is None
    assert adapter.find_orphaned_batch("0123456789abcdef", "f" * 64, "2099-01-01T00:00:00+00:00") is None
    assert adapter.get_batch(submitted.batch_id).status in ("in_progress", "completed")


def test_the_spend_view_counts_an_llm_batch_task_through_this_adapter(set_connection, run_dag_file, tmp_path):
    from airflow_provider_flex.plugins.spend_view import load_records
    from airflow_provider_flex.pricing import token_cost
    from airflow_provider_flex.spend import runs_spend

    dag_id = "common_ai_batch_spend"
    with FlexEmulator(seed=2, batch=BatchSettings(turnaround_s=0.0)) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        _run(run_dag_file, tmp_path, dag_id, "str")
        jobs = emulator.admin.batches()
    runs = [run for run in runs_spend(load_records({dag_id})) if run["dag_id"] == dag_id]
    (run,) = runs[:1]
    lines = [json.loads(line) for f in (tmp_path / "results").glob("*.jsonl") for line in f.read_text().splitlines()]
    tokens_in = sum(line["usage"]["input_tokens"] for line in lines)
    tokens_out = sum(line["usage"]["output_tokens"] for line in lines)
    bill = token_cost(tokens_in, tokens_out, model="gemini-2.5-flash", tier="batch")
    assert run["calls"] == len(jobs) == 1 and run["rows"] == 6 and run["batch_jobs"] == 1
    assert run["cost_usd"] == pytest.approx(bill, abs=1e-6) and run["cost_by_route"] == {"batch": run["cost_usd"]}
    assert run["standard_cost_usd"] == pytest.approx(2 * run["cost_usd"], abs=1e-6)
