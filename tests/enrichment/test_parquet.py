"""Parquet in (a row group at a time) and out (``results_parquet``), through pyarrow (the ``parquet`` extra)."""

from __future__ import annotations

import sys

import pytest

pa = pytest.importorskip("pyarrow", reason="make test installs the parquet extra")
pq = pytest.importorskip("pyarrow.parquet")

from airflow_provider_flex.enrichment.records import EnrichInputError  # noqa: E402
from airflow_provider_flex.hooks.retry import FlexRetryPolicy  # noqa: E402
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator  # noqa: E402

POLICY = FlexRetryPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.2, jitter=0.0, deadline=120)
SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}


def _write_rows(path, rows: int, groups: int) -> None:
    table = pa.table({"id": [f"r{i:05d}" for i in range(rows)], "title": [f"thing {i}" for i in range(rows)]})
    pq.write_table(table, path, row_group_size=rows // groups)


def test_a_parquet_file_in_two_row_groups_is_answered_once_per_row_and_exported(connection, tmp_path):
    source, target = tmp_path / "rows.parquet", tmp_path / "results.parquet"
    _write_rows(source, 5000, groups=2)
    assert pq.ParquetFile(source).num_row_groups == 2
    summary = GeminiFlexEnrichOperator(
        task_id="enrich", input_path=str(source), key_field="id", prompt_template="Label {{ row.title }}",
        output_path=str(tmp_path / "out"), response_schema=SCHEMA, retry_policy=POLICY, max_concurrency=64,
        results_parquet=str(target),
    ).execute(context={})  # fmt: skip
    assert summary["succeeded"] == 5000 and summary["exported_rows"] == 5000
    assert connection.admin.stats()["calls"]["flex"]["ok"] == 5000, "each row answered once"
    exported = pq.read_table(target)
    assert exported.num_rows == 5000 and len(set(exported.column("key").to_pylist())) == 5000
    assert (
        set(exported.column("status").to_pylist()) == {"ok"} and exported.schema.field("cost_usd").type == pa.float64()
    )


def test_parquet_without_pyarrow_or_a_broken_file_fails_before_any_call(connection, tmp_path, monkeypatch):
    source = tmp_path / "rows.parquet"
    _write_rows(source, 10, groups=1)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")

    def operator(path) -> GeminiFlexEnrichOperator:
        return GeminiFlexEnrichOperator(task_id="enrich", input_path=str(path), key_field="id",
                                        prompt_template="Label {{ row.title }}", output_path=str(tmp_path / "out"))  # fmt: skip

    with pytest.raises(EnrichInputError, match=r"cannot read input_path .*broken\.parquet.* as Parquet"):
        operator(broken).execute(context={})
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # pyarrow not installed: the import fails
    with pytest.raises(EnrichInputError, match=r"needs pyarrow: pip install 'airflow-provider-flex\[parquet\]'"):
        operator(source).execute(context={})
    assert connection.admin.stats()["requests"] == 0


@pytest.fixture
def object_storage():
    """An in-memory fsspec filesystem attached as ``memory://``, as a deployment attaches s3:// or gs://."""
    import fsspec
    from airflow.sdk.io import attach

    memory = fsspec.filesystem("memory")
    attach(protocol="memory", fs=memory)
    yield memory
    memory.store.clear()


def test_parquet_in_and_out_and_the_output_on_object_storage_resume_without_paying_twice(connection, object_storage):
    import io

    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": [f"r{i:03d}" for i in range(300)], "title": [f"t {i}" for i in range(300)]}),
                   buffer, row_group_size=100)  # fmt: skip
    object_storage.pipe("/lake/rows.parquet", buffer.getvalue())

    def enrich() -> dict:
        return GeminiFlexEnrichOperator(
            task_id="enrich", input_path="memory://lake/rows.parquet", key_field="id",
            prompt_template="Label {{ row.title }}", output_path="memory://lake/out", response_schema=SCHEMA,
            retry_policy=POLICY, max_concurrency=16, results_parquet="memory://lake/results.parquet",
        ).execute(context={})  # fmt: skip

    first = enrich()
    second = enrich()
    exported = pq.read_table(io.BytesIO(object_storage.cat("/lake/results.parquet")))
    names = {path.rsplit("/", 1)[-1] for path in object_storage.ls("/lake/out", detail=False)}
    assert (first["succeeded"], second["succeeded"], second["skipped"]) == (300, 0, 300)
    assert connection.admin.stats()["calls"]["flex"]["ok"] == 300, "the rerun read its answers from the bucket"
    assert exported.num_rows == 300 and set(exported.column("status").to_pylist()) == {"ok"}
    assert "request.json" in names and any(name.startswith("results-") for name in names)
