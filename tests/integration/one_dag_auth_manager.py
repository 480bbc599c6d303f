"""A real auth manager for the spend view's tests: Airflow's SimpleAuthManager, with one user kept to one DAG.

Airflow's FAB auth manager (per-DAG permissions) is not installed here; this subclass is the smallest
auth manager that lets the tests show the view shows a user only the DAGs the auth manager allows.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

#: The user who may read only JUDGE_DAG.
JUDGE_ONLY_USER = "judge_only"
JUDGE_DAG = "flex_llm_judge_eval"


class OneDagAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        if user.username == JUDGE_ONLY_USER and (details is None or details.id != JUDGE_DAG):
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
