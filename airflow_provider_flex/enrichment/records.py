"""Rows in: read JSONL or CSV as a stream, check keys, render each row's prompt."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import jinja2
import jinja2.sandbox

from airflow_provider_flex.storage import is_remote, local_path, object_path


class EnrichInputError(ValueError):
    """Input that cannot be enriched; the message names the row or the problem."""


@contextmanager
def open_text(path: str, mode: str = "r") -> Iterator[TextIO]:
    """Open a local path or an ``ObjectStoragePath`` URL as text."""
    if is_remote(path):
        with object_path(path).open(mode) as handle:
            yield handle if isinstance(handle, io.TextIOBase) else io.TextIOWrapper(handle, encoding="utf-8")
        return
    with open(local_path(path), mode, encoding="utf-8", newline="" if mode == "r" else None) as handle:
        yield handle


def iter_rows(
    records: Sequence[Mapping[str, Any]] | None,
    input_path: str | None,
    *,
    input_sql: str | None = None,
    input_conn_id: str | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row number, row)`` pairs, streaming from the input; numbers start at 1 (CSV: the data row)."""
    if input_sql is not None:
        from airflow_provider_flex.enrichment.sql_source import iter_sql_rows

        yield from iter_sql_rows(input_conn_id or "", input_sql)
        return
    if records is not None:
        for number, row in enumerate(records, start=1):
            if not isinstance(row, Mapping):
                raise EnrichInputError(f"records[{number - 1}] is a {type(row).__name__}, not a dict")
            yield number, dict(row)
        return
    if input_path is None:
        raise EnrichInputError("give records, input_path or input_sql")
    suffix = Path(input_path.split("?", 1)[0]).suffix.lower()
    if suffix == ".parquet":
        from airflow_provider_flex.enrichment.parquet import iter_parquet_rows

        yield from iter_parquet_rows(input_path)
        return
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise EnrichInputError(f"input_path {input_path!r}: expected a .jsonl, .ndjson, .csv or .parquet file")
    try:
        with open_text(input_path) as handle:
            if suffix == ".csv":
                reader = csv.DictReader(handle)
                for number, row in enumerate(reader, start=1):
                    if None in row or any(value is None for value in row.values()):
                        raise EnrichInputError(
                            f"{input_path} row {number} (line {reader.line_num}): "
                            f"expected {len(reader.fieldnames or [])} fields"
                        )
                    yield number, row
                return
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EnrichInputError(f"{input_path} line {number}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise EnrichInputError(f"{input_path} line {number}: expected a JSON object")
                yield number, row
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EnrichInputError(f"cannot read input_path {input_path!r}: {exc}") from None


def row_key(row: Mapping[str, Any], key_field: str, number: int) -> str:
    value = row.get(key_field)
    if value is None or value == "":
        raise EnrichInputError(f"row {number} has no value for key_field {key_field!r}")
    return str(value)


class PromptTemplate:
    """A Jinja template rendered per row with the row as ``row``; a missing field is an error."""

    def __init__(self, source: str, extra_context: Mapping[str, Any] | None = None) -> None:
        environment = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
        try:
            self._template = environment.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise EnrichInputError(f"prompt_template is not a valid template: {exc}") from None
        self.source = source
        self._context = dict(extra_context or {})

    def render(self, row: Mapping[str, Any], *, number: int, key: str) -> str:
        """Return the row's prompt; an undefined field or an empty prompt is an error naming the row."""
        try:
            prompt = self._template.render(**self._context, row=row)
        except jinja2.TemplateError as exc:
            raise EnrichInputError(f"prompt_template fails on row {number} (key {key!r}): {exc}") from None
        if not prompt.strip():
            raise EnrichInputError(f"prompt_template renders an empty prompt for row {number} (key {key!r})")
        return prompt
