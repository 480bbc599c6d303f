"""Results into SQL: an enrichment's output loaded into a table through any common-sql connection.

Columns: the key (``key_field``, the primary key), one column per top-level property of the
response schema, or ``text`` without a schema, then ``service_tier``, ``route``, ``model``,
``cost_usd``, ``status`` (``ok`` or ``failed``) and ``error`` (a failed row's reason). Answer columns
take the database's natural type for the property's JSON type (:data:`COLUMN_TYPES`: booleans as
BOOLEAN, integers, numbers, strings; objects and arrays as JSON, JSONB on PostgreSQL), so ``WHERE
needs_reply`` finds the rows it should. Rows are upserted by key, so a rerun replaces its rows instead
of duplicating them, and a row that failed and was answered later turns ``ok``. With ``load_failed``
the failed rows (dead letters) are loaded too, with their error and empty answer columns. The table is
created when missing; an older table without ``status`` and ``error`` gets them added.
"""

from __future__ import annotations

import json
import re
from collections.abc import Container, Iterator, Mapping
from typing import Any

from airflow_provider_flex.enrichment.store import OutputStore

META_COLUMNS = ("service_tier", "route", "model", "cost_usd")
STATUS_COLUMNS = ("status", "error")
#: Rows sent and committed at a time when loading (the results are streamed from the output's files).
LOAD_CHUNK_ROWS = 1000
#: A property's JSON Schema type -> its column type, by connection type (``default`` for the others).
COLUMN_TYPES: Mapping[str, Mapping[str, str]] = {
    "sqlite": {"boolean": "BOOLEAN", "integer": "INTEGER", "number": "REAL", "object": "JSON", "array": "JSON"},
    "postgres": {
        "boolean": "BOOLEAN",
        "integer": "BIGINT",
        "number": "DOUBLE PRECISION",
        "object": "JSONB",
        "array": "JSONB",
    },
    "default": {
        "boolean": "BOOLEAN",
        "integer": "BIGINT",
        "number": "DOUBLE PRECISION",
        "object": "JSON",
        "array": "JSON",
    },
}
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


def column_types(response_schema: Any, conn_type: str) -> dict[str, str]:
    """Return each answer column's SQL type on ``conn_type``'s database (TEXT for strings and anything else)."""
    from airflow_provider_flex.hooks.request import response_json_schema

    types = COLUMN_TYPES.get(conn_type, COLUMN_TYPES["default"])
    schema = response_json_schema(response_schema) if response_schema is not None else None
    properties = (schema or {}).get("properties") or {}
    return {
        column: types.get(str((properties.get(column) or {}).get("type")), "TEXT")
        for column in schema_columns(response_schema)
    }


def cell(value: Any, conn_type: str) -> Any:
    """Return an answer's value as its column takes it: JSON text for objects and arrays, 1/0 for SQLite's
    booleans (common-sql writes SQLite cells as text, and ``'True'`` is no boolean there)."""
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, bool) and conn_type == "sqlite":
        return int(value)
    return value


def check_identifiers(task: str, table: str, columns: list[str]) -> None:
    """Table and column names go into SQL text: only plain identifiers are accepted."""
    for name in (table, *columns):
        if not _IDENTIFIER.match(name):
            raise ValueError(f"{task}: {name!r} is not a plain SQL identifier (letters, digits, underscores)")


def table_rows(store: OutputStore, columns: list[str], conn_type: str) -> Iterator[tuple[Any, ...]]:
    """Yield one row per result: key, answer columns, the META_COLUMNS, then status ``ok`` and no error."""
    for result in store.results():
        parsed = result.get("parsed") if isinstance(result.get("parsed"), Mapping) else {}
        values = [result["key"]]
        for column in columns:
            values.append(cell(result.get("text") if columns == ["text"] else parsed.get(column), conn_type))
        yield (*values, *(result.get(name) for name in META_COLUMNS), "ok", None)


def failed_rows(store: OutputStore, columns: list[str], answered: Container[str]) -> Iterator[tuple[Any, ...]]:
    """Yield one row per dead letter whose key has no result: key, empty answers, status ``failed``, the error."""
    seen: set[str] = set()
    for letter in store.dead_letters():
        key = str(letter["key"])
        if key in answered or key in seen:
            continue
        seen.add(key)
        yield (key, *([None] * len(columns)), None, letter.get("route"), letter.get("model"),
               letter.get("cost_usd"), "failed", str(letter.get("error") or "")[:2000])  # fmt: skip


def load_results(
    *,
    store: OutputStore,
    sql_conn_id: str,
    table: str,
    key_field: str,
    response_schema: Any,
    task: str,
    load_failed: bool = False,
) -> tuple[int, int]:
    """Upsert every result under ``store`` into ``table`` (and, with ``load_failed``, every dead letter);
    return (rows answered, rows failed) loaded."""
    from airflow_provider_flex.compat import BaseHook

    columns = schema_columns(response_schema)
    check_identifiers(task, table, [key_field, *columns])
    clashing = sorted({key_field, *META_COLUMNS, *STATUS_COLUMNS} & set(columns))
    if clashing:
        raise ValueError(f"{task}: response schema properties {clashing} clash with the table's own columns")
    connection = BaseHook.get_connection(sql_conn_id)
    hook = connection.get_hook()
    if not hasattr(hook, "insert_rows"):
        raise ValueError(f"{task}: connection {sql_conn_id!r} is not a common-sql (DB-API) connection")
    conn_type = str(connection.conn_type or "")
    _create_or_extend(hook, table, key_field, column_types(response_schema, conn_type))
    fields = [key_field, *columns, *META_COLUMNS, *STATUS_COLUMNS]
    # Streamed, a chunk committed at a time (a million results never sit in memory); answers last, so a key
    # answered on a rerun is ok whatever failed before.
    failed = CountedRows(failed_rows(store, columns, store.scan()[0]) if load_failed else iter(()))
    answers = CountedRows(table_rows(store, columns, conn_type))
    for rows in (failed, answers) if load_failed else (answers,):
        hook.insert_rows(table, iter(rows), target_fields=fields, replace=True, replace_index=key_field,
                         commit_every=LOAD_CHUNK_ROWS)  # fmt: skip
    return answers.count, failed.count


class CountedRows:
    """Rows counted as they are read: ``insert_rows`` consumes a stream and says nothing of its length."""

    def __init__(self, rows: Iterator[tuple[Any, ...]]) -> None:
        self.rows = rows
        self.count = 0

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        for row in self.rows:
            self.count += 1
            yield row


def _create_or_extend(hook: Any, table: str, key_field: str, types: Mapping[str, str]) -> None:
    """Create the table when missing; give an older one (without ``status`` and ``error``) those columns."""
    meta = {"service_tier": "TEXT", "route": "TEXT", "model": "TEXT", "cost_usd": "REAL"}
    status = {"status": "TEXT", "error": "TEXT"}
    definitions = [f"{key_field} TEXT PRIMARY KEY", *(f"{c} {t}" for c, t in {**types, **meta, **status}.items())]
    hook.run(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(definitions)})")
    existing = set(_columns_of(hook, table))
    for column, kind in status.items():
        if column not in existing:
            hook.run(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _columns_of(hook: Any, table: str) -> list[str]:
    """Return the table's column names (a query that selects no row, read through DB-API's description)."""
    conn = hook.get_conn()
    try:
        cursor = conn.cursor()
        cursor.execute(f"SELECT * FROM {table} WHERE 1 = 0")
        return [str(d[0]).lower() for d in cursor.description or []]
    finally:
        conn.close()
