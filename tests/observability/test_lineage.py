"""OpenLineage facets of the operators, with apache-airflow-providers-openlineage installed (the extra)."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import DAG

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator, GeminiFlexGenerateContentOperator
from tests.hooks.conftest import API_KEY

pytest.importorskip("airflow.providers.openlineage")


def test_enrich_and_generate_report_datasets_and_a_run_facet(tmp_path, monkeypatch):
    from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter  # noqa: F401 (installed)
    from openlineage.client.serde import Serde

    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in range(3)))
    with FlexEmulator(api_key=API_KEY, seed=2, preempt_rate=0.0) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_GEMINI_FLEX_DEFAULT", emulator.connection_json(API_KEY))
        with DAG("lineage_probe", schedule=None):
            enrich = GeminiFlexEnrichOperator(
                task_id="enrich",
                input_path=str(source),
                key_field="id",
                prompt_template="Label {{ row.text }}",
                output_path=str(tmp_path / "out"),
                model="gemini-2.5-flash",
            )
            generate = GeminiFlexGenerateContentOperator(task_id="generate", contents="hi", model="gemini-2.5-flash")
        enrich.execute({})
        generate.execute({})
    lineage = enrich.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", str(source))]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("file", str(tmp_path / "out"))]
    facet = json.loads(Serde.to_json(lineage.run_facets["geminiFlex"]))
    assert facet["rows"] == 3 and facet["model"] == "gemini-2.5-flash"
    assert facet["serviceTiers"] == {"flex": 3}
    assert 0 < facet["costUsd"] < facet["standardCostUsd"]
    assert facet["_schemaURL"].endswith("#geminiflex")
    call = json.loads(Serde.to_json(generate.get_openlineage_facets_on_complete(None).run_facets["geminiFlex"]))
    assert call["calls"] == 1 and call["inputTokens"] > 0
    assert API_KEY not in json.dumps([facet, call])
