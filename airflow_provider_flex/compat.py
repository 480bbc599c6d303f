"""Every difference between the Airflow releases this provider supports (3.0 to 3.3), in one place.

Names that moved are imported from wherever the running Airflow has them (newest place first), and
what an older release lacks is a flag the code asks for by name. Nothing else in the package checks
Airflow's version. The matrix in ``tests/compat`` runs the same DAGs on each minor release; which
release shows what is listed in docs/compatibility.md.

Kept light: a DAG file imports this module through the operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import re
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from airflow import __version__ as AIRFLOW_VERSION


def _minor(version: str) -> tuple[int, int]:
    """Return (major, minor) of an Airflow version string such as ``3.1.8`` or ``3.2.0rc1``."""
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()  # type: ignore[union-attr]
    return int(major), int(minor)


T = TypeVar("T")
AIRFLOW_V_3_1_PLUS = _minor(AIRFLOW_VERSION) >= (3, 1)
AIRFLOW_V_3_2_PLUS = _minor(AIRFLOW_VERSION) >= (3, 2)
AIRFLOW_V_3_3_PLUS = _minor(AIRFLOW_VERSION) >= (3, 3)

try:  # Airflow 3.1+
    from airflow.sdk import BaseHook
except ImportError:  # Airflow 3.0
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]

try:  # Airflow 3.1+
    from airflow.sdk.exceptions import AirflowException
except ImportError:  # Airflow 3.0
    from airflow.exceptions import AirflowException  # type: ignore[no-redef,attr-defined]

try:  # Airflow 3.2+
    from airflow.sdk import conf
except ImportError:  # Airflow 3.0 and 3.1
    from airflow.configuration import conf  # type: ignore[no-redef]

#: Names only ``@task.gemini_flex`` needs, imported when first asked for (the decorator module costs ~4 ms,
#: which a DAG with operators alone should not pay at parse time): name -> where, newest first.
_LAZY_NAMES = {
    "determine_kwargs": ("airflow.sdk.bases.decorator", "airflow.utils.operator_helpers"),  # 3.2+, before
    "context_merge": ("airflow.sdk.definitions.context", "airflow.utils.context"),  # 3.1+, 3.0
}


def __getattr__(name: str) -> Any:
    """Import a name of :data:`_LAZY_NAMES` from wherever the running Airflow has it."""
    import importlib

    for module in _LAZY_NAMES.get(name, ()):
        found = getattr(importlib.import_module(module), name, None)
        if found is not None:
            globals()[name] = found
            return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The triggerer renders an operator's templated ``start_trigger_args`` only from Airflow 3.3 on
#: (the standard provider's ``DateTimeSensor`` makes the same choice); before, a deferrable task
#: starts on a worker, renders its arguments there and defers.
TRIGGERER_RENDERS_START_ARGUMENTS = AIRFLOW_V_3_3_PLUS


#: Plugins' ``external_views`` (a nav entry, a tab on each DAG run) appear in the UI from Airflow 3.1
#: on; on 3.0 the spend view's pages are served, but the UI links to none of them.
UI_SHOWS_EXTERNAL_VIEWS = AIRFLOW_V_3_1_PLUS


async def run_blocking(func: Callable[..., T], *args: Any) -> T:
    """Run a blocking ``func(*args)`` in a thread, keeping the event loop free; return its result.

    Before Airflow 3.3, a request to the supervisor (a connection read, an XCom) from a plain thread of the
    triggerer crashes the trigger runner ("Response read out of order": the sync request runs a second event
    loop on the supervisor's socket). asgiref's ``sync_to_async`` (what Airflow 3.0's own providers use)
    sends such a request through the triggerer's loop.
    """
    if AIRFLOW_V_3_3_PLUS:
        return await asyncio.to_thread(func, *args)
    from asgiref.sync import sync_to_async

    return await sync_to_async(func, thread_sensitive=False)(*args)


async def push_xcom_from_trigger(task_instance: Any, key: str, value: Any) -> None:
    """Store an XCom of ``task_instance`` from a trigger, through the XCom backend as a task would.

    Airflow 3.3 has ``XCom.aset``; before, the blocking ``XCom.set`` goes through :func:`run_blocking`.
    (``TaskSuccessEvent(xcoms=...)`` is no way round it: Airflow 3.0 to 3.3 store those JSON-encoded twice,
    so downstream tasks read a string.)
    """
    from airflow.sdk.execution_time.xcom import XCom

    fields = {
        "key": key,
        "value": value,
        "dag_id": task_instance.dag_id,
        "task_id": task_instance.task_id,
        "run_id": task_instance.run_id,
        "map_index": task_instance.map_index if task_instance.map_index is not None else -1,
    }
    if AIRFLOW_V_3_3_PLUS:
        await XCom.aset(**fields)
    else:
        await run_blocking(lambda: XCom.set(**fields))


#: What Airflow's async connection read imports on its first call (45-60 ms of CPU with no bytecode cache).
CONNECTION_READ_MODULES = (
    "asgiref.sync",
    "airflow.sdk.execution_time.cache",
    "airflow.sdk.execution_time.supervisor",
)


async def import_off_the_loop(*modules: str) -> None:
    """Import each of ``modules`` not yet imported in one thread: a first import computes for tens of
    milliseconds, a stall every other trigger on the triggerer's shared loop would feel.
    A module this Airflow release lacks is skipped (whoever needs it raises the error)."""
    missing = [module for module in modules if module not in sys.modules]
    if missing:
        await asyncio.to_thread(_import_each, missing)


def _import_each(modules: list[str]) -> None:
    for module in modules:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


async def read_connection_async(hook: Any, conn_id: str, read: Callable[[Any], T]) -> T:
    """Return ``read(connection)`` for the connection ``conn_id``, without blocking the event loop (a trigger).

    Airflow 3.1+ has ``BaseHook.aget_connection``. On 3.0 the read and ``read`` itself run through
    :func:`run_blocking`: 3.0's ``Connection.extra_dejson`` asks the supervisor to mask secrets with a sync
    request, which fails on the event loop's thread.
    """
    await import_off_the_loop(*CONNECTION_READ_MODULES)
    if hasattr(hook, "aget_connection"):
        return read(await hook.aget_connection(conn_id))
    return await run_blocking(lambda: read(hook.get_connection(conn_id)))


async def signed_in_user(request: Any, bearer_token: str | None) -> Any:
    """Return the Airflow user a request to a plugin app is signed in as (401/403 otherwise).

    Airflow 3.1+ reads the request (a Bearer token, else the UI's ``_token`` cookie); 3.0's
    ``get_user`` takes the token alone, so the cookie is read here.
    """
    from airflow.api_fastapi.core_api.security import get_user

    if AIRFLOW_V_3_1_PLUS:
        from fastapi.security import HTTPAuthorizationCredentials

        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=bearer_token) if bearer_token else None
        return await get_user(request, None, credentials)
    token = bearer_token or request.cookies.get("_token")
    if not token:
        from fastapi import HTTPException

        raise HTTPException(401, "Not authenticated")
    return await get_user(token)


def parse_datetime(value: str) -> datetime:
    """Return the datetime an ISO 8601 string names; a trailing ``Z`` is UTC (Python 3.10 reads no ``Z``)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "TRIGGERER_RENDERS_START_ARGUMENTS",
    "UI_SHOWS_EXTERNAL_VIEWS",
    "AirflowException",
    "BaseHook",
    "conf",
    "parse_datetime",
    "push_xcom_from_trigger",
    "read_connection_async",
    "run_blocking",
    "signed_in_user",
]
