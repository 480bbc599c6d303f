"""Every difference between the Airflow releases this provider supports (3.0 to 3.3), in one place.

Names that moved are imported from wherever the running Airflow has them (newest place first), and
what an older release lacks is a flag the code asks for by name. Nothing else in the package checks
Airflow's version. The matrix in ``tests/compat`` runs the same DAGs on each minor release; which
release shows what is listed in docs/compatibility.md.

Kept light: a DAG file imports this module through the operators.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Any

from airflow import __version__ as AIRFLOW_VERSION


def _minor(version: str) -> tuple[int, int]:
    """Return (major, minor) of an Airflow version string such as ``3.1.8`` or ``3.2.0rc1``."""
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()  # type: ignore[union-attr]
    return int(major), int(minor)


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

try:  # Airflow 3.2+
    from airflow.sdk.bases.decorator import determine_kwargs
except ImportError:  # Airflow 3.0 and 3.1
    from airflow.utils.operator_helpers import determine_kwargs  # type: ignore[no-redef,attr-defined]

try:  # Airflow 3.1+
    from airflow.sdk.definitions.context import context_merge
except ImportError:  # Airflow 3.0
    from airflow.utils.context import context_merge  # type: ignore[no-redef,attr-defined]

#: The triggerer renders an operator's templated ``start_trigger_args`` only from Airflow 3.3 on
#: (the standard provider's ``DateTimeSensor`` makes the same choice); before, a deferrable task
#: starts on a worker, renders its arguments there and defers.
TRIGGERER_RENDERS_START_ARGUMENTS = AIRFLOW_V_3_3_PLUS

#: A trigger can write XComs itself (``XCom.aset``) from Airflow 3.3 on; before, it hands them to
#: the triggerer in ``TaskSuccessEvent(xcoms=...)``.
TRIGGER_WRITES_XCOMS = AIRFLOW_V_3_3_PLUS

#: Plugins' ``external_views`` (a nav entry, a tab on each DAG run) appear in the UI from Airflow 3.1
#: on; on 3.0 the spend view's pages are served, but the UI links to none of them.
UI_SHOWS_EXTERNAL_VIEWS = AIRFLOW_V_3_1_PLUS


async def get_connection_async(hook: Any, conn_id: str) -> Any:
    """Return the connection ``conn_id`` without blocking the event loop (a trigger's read).

    Airflow 3.1+ has ``BaseHook.aget_connection``; on 3.0 the blocking read runs in a thread, as
    Airflow 3.0's own providers do it (``sync_to_async(get_connection)``).
    """
    if hasattr(hook, "aget_connection"):
        return await hook.aget_connection(conn_id)
    return await asyncio.to_thread(hook.get_connection, conn_id)


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
    "TRIGGER_WRITES_XCOMS",
    "UI_SHOWS_EXTERNAL_VIEWS",
    "AirflowException",
    "BaseHook",
    "conf",
    "context_merge",
    "determine_kwargs",
    "get_connection_async",
    "parse_datetime",
    "signed_in_user",
]
