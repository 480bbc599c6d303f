"""The flex spend view: a FastAPI app the api-server mounts at ``/flex``.

``GET /flex/api/runs`` (JSON) and ``GET /flex/spend`` (a server-rendered page: a chart per day of
flex spend against the same tokens at standard price, and a table per DAG run linking to the run
in Airflow's UI). Figures come from the provider tasks' own XCom values (:mod:`airflow_provider_flex.spend`),
so there is nothing new to run or store.

Access goes through the api-server's own security: the user comes from a Bearer token or the UI's
``_token`` cookie (``airflow.api_fastapi.core_api.security.get_user``), and only the DAGs the auth
manager lets that user read are shown. The api-server's ``auth_manager_from_app`` dependency reads
``request.app.state``, which a mounted plugin app does not have, so the auth manager is taken from
``get_auth_manager()`` instead.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_flex.plugins.spend_page import render_spend_page
from airflow_provider_flex.spend import (
    BATCH_OPERATORS,
    PROVIDER_OPERATORS,
    SPEND_XCOM_KEY,
    TaskRecord,
    runs_spend,
    spend_by_day,
)

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

#: The decorator's name as a task instance records it (``custom_operator_name``).
DECORATOR_NAME = "@task.gemini_flex"
_bearer = HTTPBearer(auto_error=False)
#: Task states of tasks that ran (or tried to): a provider task in one of them with no XCom failed before a call.
ENDED_STATES = ("success", "failed", "up_for_retry")


async def current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> BaseUser:
    """Return the signed-in Airflow user (Bearer token or the UI's cookie): 401/403 otherwise."""
    from airflow_provider_flex.compat import signed_in_user

    return await signed_in_user(request, credentials.credentials if credentials else None)


def readable_dag_ids(user: Annotated[Any, Depends(current_user)]) -> set[str]:
    """Return the DAGs the auth manager lets this user read."""
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_authorized_dag_ids(user=user, method="GET")


ReadableDags = Annotated[set[str], Depends(readable_dag_ids)]


def load_records(dag_ids: set[str], dag_id: str | None = None, run_id: str | None = None) -> list[TaskRecord]:
    """Return the provider tasks' XCom values (results, or what a failed task spent) in readable DAGs.

    A provider task that ended with no XCom (it failed before its first call) comes back with key None, so
    its run is listed with $0; common.ai batch tasks come back only with what this provider's adapter recorded.
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    wanted = dag_ids & {dag_id} if dag_id else dag_ids
    if not wanted:
        return []
    with create_session() as session:
        rows = session.execute(_provider_tasks_query(wanted, run_id)).all()
    return [
        TaskRecord(
            dag_id=row.dag_id,
            run_id=row.run_id,
            run_state=str(getattr(row.state, "value", row.state)) if row.state else None,
            run_start=row.start_date.isoformat() if row.start_date else None,
            task_id=row.task_id,
            map_index=row.map_index,
            key=row.key,
            value=XComModel.deserialize_value(SimpleNamespace(value=row.value)) if row.key else None,
        )
        for row in rows
    ]


def _provider_tasks_query(dag_ids: set[str], run_id: str | None) -> Any:
    """Return the query of ended provider tasks in ``dag_ids`` with their result or spend XCom, if any."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import and_, or_, select

    ours = or_(TaskInstance.operator.in_(PROVIDER_OPERATORS), TaskInstance.custom_operator_name == DECORATOR_NAME)
    query = (
        select(
            TaskInstance.dag_id,
            TaskInstance.run_id,
            TaskInstance.task_id,
            TaskInstance.map_index,
            XComModel.key,
            XComModel.value,
            DagRun.state,
            DagRun.start_date,
        )
        .join(DagRun, and_(DagRun.dag_id == TaskInstance.dag_id, DagRun.run_id == TaskInstance.run_id))
        .outerjoin(
            XComModel,
            and_(
                TaskInstance.dag_id == XComModel.dag_id,
                TaskInstance.run_id == XComModel.run_id,
                TaskInstance.task_id == XComModel.task_id,
                TaskInstance.map_index == XComModel.map_index,
                XComModel.key.in_(("return_value", SPEND_XCOM_KEY)),
            ),
        )
        .where(TaskInstance.dag_id.in_(sorted(dag_ids)))
        .where(TaskInstance.state.in_(ENDED_STATES))
        .where(
            or_(
                and_(ours, or_(XComModel.key.is_not(None), TaskInstance.state != "success")),
                and_(TaskInstance.operator.in_(BATCH_OPERATORS), XComModel.key == SPEND_XCOM_KEY),
            )
        )
    )
    return query.where(TaskInstance.run_id == run_id) if run_id else query


def create_spend_app() -> FastAPI:
    """Return the app the plugin mounts (a new one per call: tests build their own)."""
    app = FastAPI(title="Gemini Flex spend", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def to_login(request: Request, exc: StarletteHTTPException) -> Response:
        """Send a browser that is not signed in to Airflow's login page (and back); API clients get the 401."""
        if exc.status_code == 401 and wants_html(request):
            return RedirectResponse(login_url(request), status_code=303)
        return await http_exception_handler(request, exc)

    @app.get("/api/runs")
    def runs(dag_ids: ReadableDags, dag_id: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        """Return DAG runs that spent through the provider, newest first (``?dag_id=`` and ``?run_id=`` filter)."""
        return runs_spend(load_records(dag_ids, dag_id, run_id))

    @app.get("/spend", response_class=HTMLResponse)
    def spend(request: Request, dag_ids: ReadableDags, dag_id: str | None = None, run_id: str | None = None) -> str:
        """Return the page: spend against standard per day, and every run with a link to it in Airflow's UI."""
        found = runs_spend(load_records(dag_ids, dag_id, run_id))
        return render_spend_page(found, spend_by_day(found), ui_root=_ui_root(request), dag_id=dag_id, run_id=run_id)

    return app


def _ui_root(request: Request) -> str:
    """Return the api-server's own root (where Airflow's UI is), the mount prefix taken off."""
    from airflow_provider_flex.plugins.spend_plugin import URL_PREFIX

    return str(request.scope.get("root_path", "")).removesuffix(URL_PREFIX)


def wants_html(request: Request) -> bool:
    """Return whether the request is a browser's page visit (it accepts HTML), not an API client's."""
    return "text/html" in request.headers.get("accept", "") and not request.url.path.rstrip("/").endswith("/api/runs")


def login_url(request: Request) -> str:
    """Return Airflow's login page, coming back to this page once signed in."""
    from airflow.api_fastapi.app import get_auth_manager

    return _ui_root(request) + get_auth_manager().get_url_login(next_url=str(request.url))
