"""Results into SQL: an enrichment's output loaded into a table through any common-sql connection.

Columns: the key (``key_field``, the primary key), one column per top-level property of the
response schema (JSON text for objects and arrays), or ``text`` without a schema, then
``service_tier``, ``route``, ``model`` and ``cost_usd``. Rows are upserted by key, so a rerun
replaces its rows instead of duplicating them. The table is created when missing (TEXT and REAL
columns: portable across SQLite, PostgreSQL and MySQL); an existing table must have these columns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from airflow_provider_flex.enrichment.store import OutputStore

META_COLUMNS = ("service_tier", "route", "model", "cost_usd")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def schema_columns(response_schema: Any) -> list[str]:
    """Return the table's answer columns: the schema's top-level properties, or ``text`` without a schema."""
    if isinstance(response_schema, Mapping):
        properties = response_schema.get("properties")
        if isinstance(properties, Mapping) and properties:
            return list(properties)
    fields = getattr(response_schema, "model_fields", None)  # a pydantic model class
    if fields:
        return list(fields)
    return ["text"]


def check_identifiers(task: str, table: str, columns: list[str]) -> None:
    """Table and column names go into SQL text: only plain identifiers are accepted."""
    for name in (table, *columns):
        if not _IDENTIFIER.match(name):
            raise ValueError(f"{task}: {name!r} is not a plain SQL identifier (letters, digits, underscores)")


def table_rows(store: OutputStore, key_field: str, columns: list[str]) -> Iterator[tuple[Any, ...]]:
    """Yield one row per result: key, answer columns, then the META_COLUMNS."""
    for entry in store.result_files():
        for line in entry.read_text().splitlines():
            if not line.strip():
                continue
            result = json.loads(line)
            parsed = result.get("parsed") if isinstance(result.get("parsed"), Mapping) else {}
            values = [result["key"]]
            for column in columns:
                value = result.get("text") if columns == ["text"] else parsed.get(column)
                values.append(json.dumps(value) if isinstance(value, dict | list) else value)
            values += [result.get(name) for name in META_COLUMNS]
            yield tuple(values)


def load_results(
    *, store: OutputStore, sql_conn_id: str, table: str, key_field: str, response_schema: Any, task: str
) -> int:
    """Upsert every result under ``store`` into ``table``; the number of rows loaded."""
    from airflow_provider_flex.compat import BaseHook

    columns = schema_columns(response_schema)
    check_identifiers(task, table, [key_field, *columns])
    clashing = sorted({key_field, *META_COLUMNS} & set(columns))
    if clashing:
        raise ValueError(f"{task}: response schema properties {clashing} clash with the table's own columns")
    hook = BaseHook.get_connection(sql_conn_id).get_hook()
    if not hasattr(hook, "insert_rows"):
        raise ValueError(f"{task}: connection {sql_conn_id!r} is not a common-sql (DB-API) connection")
    types = {column: "TEXT" for column in columns} | {"service_tier": "TEXT", "route": "TEXT", "model": "TEXT"}
    definitions = ", ".join([f"{key_field} TEXT PRIMARY KEY", *(f"{c} {t}" for c, t in types.items()), "cost_usd REAL"])
    hook.run(f"CREATE TABLE IF NOT EXISTS {table} ({definitions})")
    rows = list(table_rows(store, key_field, columns))
    if rows:
        hook.insert_rows(
            table,
            rows,
            target_fields=[key_field, *columns, *META_COLUMNS],
            replace=True,
            replace_index=key_field,
        )
    return len(rows)
