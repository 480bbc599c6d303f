"""The enrichment's output as an Airflow Asset: declared when the DAG is parsed, its event carrying the figures."""

from __future__ import annotations

from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator


def test_a_static_output_and_table_are_assets_and_a_templated_one_is_not(tmp_path):
    operator = GeminiFlexEnrichOperator(task_id="e", records=[], key_field="k", prompt_template="x",
                                        output_path=str(tmp_path / "out"), sql_conn_id="db", table="reviews")  # fmt: skip
    uris = [asset.uri for asset in operator.outlets]
    assert uris == [(tmp_path / "out").as_uri(), "x-gemini-flex-table://db/reviews"]
    templated = GeminiFlexEnrichOperator(task_id="t", records=[], key_field="k", prompt_template="x",
                                         output_path="/data/{{ ds }}")  # fmt: skip
    assert templated.outlets == []
    off = GeminiFlexEnrichOperator(task_id="o", records=[], key_field="k", prompt_template="x",
                                   output_path=str(tmp_path), output_asset=False)  # fmt: skip
    assert off.outlets == []


def test_the_asset_event_carries_the_runs_figures_under_dag_test(connection, run_dag_file, tmp_path):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    output = tmp_path / "enriched"
    dag_run = run_dag_file(
        f"""
        from datetime import datetime
        from airflow.sdk import DAG
        from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

        with DAG("flex_asset_producer", schedule=None, start_date=datetime(2026, 1, 1)):
            GeminiFlexEnrichOperator(
                task_id="enrich",
                records=[{{"id": f"r{{i}}", "title": f"thing {{i}}"}} for i in range(5)],
                key_field="id",
                prompt_template="Describe {{{{ row.title }}}}",
                output_path={str(output)!r},
            )
        """,
        "flex_asset_producer",
    )
    assert dag_run.state == "success"
    with create_session() as session:
        events = session.execute(
            select(AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == output.as_uri())
        ).scalars().all()  # fmt: skip
    assert events and events[-1]["succeeded"] == 5 and events[-1]["rows"] == 5 and events[-1]["failed"] == 0
    assert events[-1]["cost_usd"] > 0 and events[-1]["output_path"] == str(output)
