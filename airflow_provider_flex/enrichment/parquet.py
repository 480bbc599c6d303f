"""Parquet in and out (the ``parquet`` extra: pyarrow).

In: an ``input_path`` ending in ``.parquet`` (a local path or an ``ObjectStoragePath`` URL) is read one
row group at a time, so memory holds one group, not the file. Out: :func:`export_parquet` writes an
enrichment's results (and, if asked, its dead letters) as one Parquet file, a row group per
:data:`ROWS_PER_GROUP` rows; the operator's ``results_parquet`` does so once a run succeeds.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

from airflow_provider_flex.enrichment.records import EnrichInputError
from airflow_provider_flex.storage import is_remote, local_path, object_path

ROWS_PER_GROUP = 10_000
#: The exported columns: the row's key, its answer, how it was served, and its status.
EXPORT_COLUMNS = ("key", "status", "text", "parsed", "error", "service_tier", "route", "model", "cost_usd")


def _pyarrow(what: str) -> Any:
    """Return ``pyarrow.parquet``; a clear error naming ``what`` needs it when it is not installed."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise EnrichInputError(f"{what} needs pyarrow: pip install 'airflow-provider-flex[parquet]'") from None
    return pq


def _open(location: str, mode: str) -> Any:
    return object_path(location).open(mode) if is_remote(location) else open(local_path(location), mode)


def iter_parquet_rows(input_path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row number, row)`` pairs of a Parquet file, one row group in memory at a time (numbers from 1)."""
    pq = _pyarrow(f"input_path {input_path!r} (Parquet)")
    number = 0
    try:
        with _open(input_path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            for group in range(parquet.num_row_groups):
                for row in parquet.read_row_group(group).to_pylist():
                    number += 1
                    yield number, row
    except EnrichInputError:
        raise
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise EnrichInputError(f"cannot read input_path {input_path!r} as Parquet: {exc}") from None


def export_parquet(output_path: str, target: str, *, include_failed: bool = True) -> int:
    """Write the results under ``output_path`` (and its dead letters) to ``target`` as Parquet; return the rows.

    ``parsed`` is JSON text (its shape varies with the schema); a failed row has its ``error`` and no answer.
    The file is written whole: a local one appears under its name only once complete.
    """
    pq = _pyarrow(f"results_parquet {target!r}")
    import pyarrow as pa

    from airflow_provider_flex.enrichment.store import iter_results

    schema = pa.schema([(name, pa.float64() if name == "cost_usd" else pa.string()) for name in EXPORT_COLUMNS])
    rows = (_export_row(row) for row in iter_results(output_path, include_failed=include_failed))
    partial = target if is_remote(target) else str(local_path(target).with_name(f".{local_path(target).name}.partial"))
    written = 0
    with _open(partial, "wb") as handle, pq.ParquetWriter(handle, schema) as writer:
        while group := list(itertools.islice(rows, ROWS_PER_GROUP)):  # a row group at a time, never the whole
            writer.write_table(pa.Table.from_pylist(group, schema=schema))
            written += len(group)
    if not is_remote(target):
        local_path(partial).replace(local_path(target))
    return written


def _export_row(row: dict[str, Any]) -> dict[str, Any]:
    parsed = row.get("parsed")
    return {
        "key": str(row.get("key")),
        "status": row.get("status"),
        "text": row.get("text"),
        "parsed": json.dumps(parsed) if parsed is not None else None,
        "error": row.get("error"),
        "service_tier": row.get("service_tier"),
        "route": row.get("route"),
        "model": row.get("model"),
        "cost_usd": float(row["cost_usd"]) if row.get("cost_usd") is not None else None,
    }
