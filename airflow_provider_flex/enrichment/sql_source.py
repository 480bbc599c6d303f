"""Rows from a SQL query (``input_sql`` on ``input_conn_id``): streamed in chunks, never the whole result in memory.

Any common-sql (DB-API) connection: PostgreSQL reads through a server-side (named) cursor, so the
server holds the result and the worker fetches ``CHUNK_ROWS`` at a time; other databases fetch in
chunks from an ordinary cursor (SQLite steps through its result as it is fetched; MySQL's mysqlclient
buffers the whole result in the client unless the connection's extra names a streaming cursor,
``{"cursor": "sscursor"}``, as the MySQL provider documents, and a warning says so). A row's fields
are its columns. Each pass over the input (the one pass that checks every row, the engine's, a
batch job's prompts) runs the query again, so a rerun reads the table as it is then and skips the
keys already answered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from airflow_provider_flex.enrichment.records import EnrichInputError

#: Rows fetched at once from the cursor.
CHUNK_ROWS = 1000
#: Connection types whose DB-API driver keeps a named cursor's result on the server (psycopg2).
SERVER_SIDE_CURSORS = frozenset({"postgres"})
#: The MySQL provider's ``cursor`` extras that stream a result (mysqlclient's SSCursor family).
MYSQL_STREAMING_CURSORS = frozenset({"sscursor", "ssdictcursor"})

log = logging.getLogger(__name__)


def sql_hook(conn_id: str) -> tuple[Any, str]:
    """Return the common-sql hook of ``conn_id`` and its connection type; EnrichInputError when it has none."""
    from airflow_provider_flex.compat import BaseHook

    try:
        connection = BaseHook.get_connection(conn_id)
        hook = connection.get_hook()
    except Exception as exc:
        raise EnrichInputError(f"input_conn_id {conn_id!r}: {exc}") from None
    if not hasattr(hook, "get_conn"):
        raise EnrichInputError(f"input_conn_id {conn_id!r} is not a common-sql (DB-API) connection")
    conn_type = str(connection.conn_type or "")
    if buffers_whole_result(conn_type, connection.extra_dejson):
        log.warning("input_conn_id %r is MySQL without a streaming cursor: the client holds the whole result of "
                    "input_sql in memory; set the connection extra {\"cursor\": \"sscursor\"}.", conn_id)  # fmt: skip
    return hook, conn_type


def buffers_whole_result(conn_type: str, extra: dict[str, Any]) -> bool:
    """Return whether this connection's driver holds a query's whole result in the client (MySQL's default)."""
    return conn_type == "mysql" and str(extra.get("cursor", "")).lower() not in MYSQL_STREAMING_CURSORS


def iter_sql_rows(conn_id: str, sql: str, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row number, row)`` pairs of ``sql``'s result, ``chunk_rows`` fetched at a time (numbers from 1)."""
    if not sql or not sql.strip():
        raise EnrichInputError("input_sql is empty")
    hook, conn_type = sql_hook(conn_id)
    conn = hook.get_conn()
    try:
        cursor = conn.cursor(name="airflow_flex_enrich") if conn_type in SERVER_SIDE_CURSORS else conn.cursor()
        if conn_type in SERVER_SIDE_CURSORS:
            cursor.itersize = chunk_rows
        try:
            cursor.execute(sql)
            names = (
                [str(column[0]) for column in cursor.description or []]
                if conn_type not in SERVER_SIDE_CURSORS
                else None
            )
            number = 0
            while True:
                chunk = cursor.fetchmany(chunk_rows)
                if names is None:  # a named cursor knows its columns once the first rows came
                    names = [str(column[0]) for column in cursor.description or []]
                if not chunk:
                    return
                for values in chunk:
                    number += 1
                    yield number, dict(zip(names, values, strict=True))
        except EnrichInputError:
            raise
        except Exception as exc:
            raise EnrichInputError(f"input_sql on {conn_id!r} failed: {type(exc).__name__}: {exc}".strip()) from None
    finally:
        conn.close()
