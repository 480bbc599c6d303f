"""``GeminiFlexSpendPlugin``: registered through the ``airflow.plugins`` entry point.

Airflow loads entry-point plugins in every process that looks at plugins, so this module stays
light: the FastAPI app (FastAPI alone costs ~110 ms to import) is built the first time the
api-server (or ``/api/v2/plugins``, or ``airflow plugins``) asks for it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from airflow.plugins_manager import AirflowPlugin

#: Where the spend view's app is mounted on the api-server.
URL_PREFIX = "/flex"


@cache
def _apps() -> list[dict[str, Any]]:
    from airflow_provider_flex.plugins.spend_view import create_spend_app

    return [{"app": create_spend_app(), "url_prefix": URL_PREFIX, "name": "Gemini Flex spend"}]


class GeminiFlexSpendPlugin(AirflowPlugin):
    """Flex spend and savings per DAG and run: ``/flex/spend`` (page), ``/flex/api/runs`` (JSON)."""

    name = "gemini_flex"
    #: ``url_route`` makes Airflow's UI show a view inside its own page: the run view as a tab of each DAG
    #: run (the UI makes tabs only for views with one), the overview under Browse.
    external_views = [
        {
            "name": "Flex spend",
            "href": f"{URL_PREFIX}/spend",
            "destination": "nav",
            "category": "browse",
            "url_route": "flex-spend",
        },
        {
            "name": "Flex spend",
            "href": f"{URL_PREFIX}/spend?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "flex-spend-run",
        },
    ]

    @property  # type: ignore[override]
    def fastapi_apps(self) -> list[dict[str, Any]]:
        return _apps()
