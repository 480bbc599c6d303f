"""An enrichment's output as an Airflow Asset: declared in the task's ``outlets``, its event carrying the figures.

A downstream DAG scheduled on the asset (``schedule=[asset]``) runs once an enrichment wrote it, and reads
what the run did from the triggering event's extra: ``rows`` (in the output over every run),
``succeeded``, ``failed``, ``cost_usd`` and where the output is (``output_path``, ``table``).
"""

from __future__ import annotations

from typing import Any

from airflow_provider_flex.storage import is_remote, local_path

#: The scheme of a results table's asset (Airflow takes ``x-`` schemes as they are).
TABLE_SCHEME = "x-gemini-flex-table"


def output_assets(output_path: Any, sql_conn_id: Any, table: Any) -> list[Any]:
    """Return the assets of an enrichment's output known when the DAG is parsed: a local (or ``file://``)
    ``output_path`` and a results table; a templated location has none (declare ``outlets`` yourself)."""
    from airflow.sdk import Asset

    assets = []
    if isinstance(output_path, str) and "{{" not in output_path and not is_remote(output_path):
        uri = local_path(output_path).absolute().as_uri()
        assets.append(Asset(name=f"gemini_flex_output:{uri.removeprefix('file://')}", uri=uri))
    if isinstance(sql_conn_id, str) and isinstance(table, str) and "{{" not in sql_conn_id + table:
        assets.append(table_asset(sql_conn_id, table))
    return assets


def table_asset(sql_conn_id: str, table: str) -> Any:
    """Return the asset of a results table (what a downstream DAG schedules on: ``schedule=[table_asset(...)]``)."""
    from airflow.sdk import Asset

    return Asset(name=f"gemini_flex_table:{sql_conn_id}.{table}", uri=f"{TABLE_SCHEME}://{sql_conn_id}/{table}")


def asset_extra(summary: Any) -> dict[str, Any]:
    """Return what an asset event of this run carries (JSON): rows, succeeded, failed, cost, where."""
    return {
        "rows": summary.output_rows,
        "succeeded": summary.succeeded,
        "failed": summary.failed,
        "cost_usd": summary.cost_usd,
        "output_path": summary.output_path,
        "table": summary.table,
    }


def record_asset_events(context: Any, outlets: list[Any], summary: Any) -> None:
    """Put the run's figures in the extra of each asset among ``outlets`` (a context without outlet events,
    as in a plain ``execute(context={})``, has nothing to record)."""
    from airflow.sdk import Asset

    events = context.get("outlet_events") if hasattr(context, "get") else None
    if events is None:
        return
    for outlet in outlets:
        if isinstance(outlet, Asset):
            events[outlet].extra.update(asset_extra(summary))
