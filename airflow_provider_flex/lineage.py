"""OpenLineage for the provider's operators (``apache-airflow-providers-openlineage``, the ``openlineage`` extra).

Imported only from the operators' ``get_openlineage_facets_on_complete``, i.e. only when the
OpenLineage provider is installed and enabled. Datasets are the files and tables a task read and
wrote; the run facet ``geminiFlex`` carries the model, tiers, calls, rows, tokens and cost (the
same figures as :mod:`airflow_provider_flex.spend`), never a prompt, an answer or a key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attr
from airflow.providers.common.compat.openlineage.facet import InputDataset, OutputDataset, RunFacet
from airflow.providers.openlineage.extractors import OperatorLineage

from airflow_provider_flex.spend import spend_of

FACET_NAME = "geminiFlex"


@attr.define
class GeminiFlexRunFacet(RunFacet):
    """What a task's Gemini calls used and cost."""

    model: str | None = attr.field(default=None)
    serviceTiers: dict[str, int] = attr.field(factory=dict)  # OpenLineage facets are camelCase
    calls: int = attr.field(default=0)
    rows: int = attr.field(default=0)
    inputTokens: int = attr.field(default=0)
    outputTokens: int = attr.field(default=0)
    cachedTokens: int = attr.field(default=0)
    costUsd: float = attr.field(default=0.0)
    standardCostUsd: float = attr.field(default=0.0)

    @staticmethod
    def _get_schema() -> str:
        return "https://github.com/airflow-provider-flex/airflow-provider-flex/blob/main/docs/lineage.md#geminiflex"


def dataset_of(location: str) -> tuple[str, str]:
    """Return OpenLineage (namespace, name) of a file location: ``file`` and its path, or ``scheme://bucket`` and the key."""
    parts = urlsplit(location)
    if parts.scheme in ("", "file"):
        return "file", parts.path if parts.scheme else location
    return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")


def run_facet(result: Mapping[str, Any] | None, model: str | None) -> GeminiFlexRunFacet | None:
    spend = spend_of(result)
    if spend is None:
        return None
    return GeminiFlexRunFacet(
        model=(result or {}).get("model") or model,
        serviceTiers=dict(spend.tiers),
        calls=spend.calls,
        rows=spend.rows,
        inputTokens=spend.input_tokens,
        outputTokens=spend.output_tokens,
        cachedTokens=spend.cached_tokens,
        costUsd=spend.cost_usd,
        standardCostUsd=spend.standard_cost_usd,
    )


def operator_lineage(
    *,
    inputs: Iterable[str | tuple[str, str]] = (),
    outputs: Iterable[str | tuple[str, str]] = (),
    result: Mapping[str, Any] | None = None,
    model: str | None = None,
) -> OperatorLineage:
    """Return lineage of a task: its input and output locations (or ``(namespace, name)`` pairs) and its run facet."""

    def pair(item: str | tuple[str, str]) -> tuple[str, str]:
        return item if isinstance(item, tuple) else dataset_of(item)

    facet = run_facet(result, model)
    return OperatorLineage(
        inputs=[InputDataset(*pair(item)) for item in inputs],
        outputs=[OutputDataset(*pair(item)) for item in outputs],
        run_facets={FACET_NAME: facet} if facet is not None else {},
    )


def table_dataset(sql_conn_id: str, table: str) -> tuple[str, str]:
    """Return (namespace, name) of a table behind a common-sql connection: its type and host, and the table."""
    from airflow_provider_flex.compat import BaseHook

    conn = BaseHook.get_connection(sql_conn_id)
    host = conn.host or ""
    if conn.port:
        host = f"{host}:{conn.port}"
    return f"{conn.conn_type}://{host}", f"{conn.schema}.{table}" if conn.schema and "." not in table else table
