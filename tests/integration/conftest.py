"""One real Airflow deployment for the integration tests: the repo's example DAGs plus the tests' own."""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

import pytest

from airflow_provider_flex.emulator import FlexEmulator
from tests.deployment import AirflowDeployment, link_dags

REPO_DAGS = Path(__file__).resolve().parents[2] / "dags"
TEST_DAGS = Path(__file__).resolve().parent / "dags"
API_KEY = f"it-key-{secrets.token_hex(16)}"
POOL_SLOTS = 2
#: Airflow users with real passwords (SimpleAuthManager, not its all-admins mode).
USERS = {"admin": "admin", "alice": "viewer", "judge_only": "viewer"}
PASSWORDS = {name: f"pw-{name}-{secrets.token_hex(6)}" for name in USERS}


@pytest.fixture(scope="session")
def emulator():
    with FlexEmulator(api_key=API_KEY, slots=8, service_time=(0.4, 0.8), seed=5) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def airflow(emulator, tmp_path_factory):
    root = tmp_path_factory.mktemp("deployment")
    dags = link_dags(root / "dags", [*REPO_DAGS.iterdir(), *TEST_DAGS.glob("*.py")])
    # The test auth manager's module on the processes' path: its folder alone (the repo root would add the
    # package's egg-info, i.e. its entry points, a second time).
    auth_path = root / "auth_manager"
    auth_path.mkdir()
    shutil.copy(Path(__file__).with_name("one_dag_auth_manager.py"), auth_path)
    passwords = root / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    env = {
        "AIRFLOW__CORE__AUTH_MANAGER": "one_dag_auth_manager.OneDagAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{name}:{role}" for name, role in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "PYTHONPATH": str(auth_path),
        "AIRFLOW_CONN_GEMINI_FLEX_DEFAULT": emulator.connection_json(API_KEY, initial_delay=0.2),
        "AIRFLOW_CONN_FLEX_DEMO_SQLITE": json.dumps({"conn_type": "sqlite", "host": str(root / "demo.db")}),
        "AIRFLOW_VAR_FLEX_OUTPUT_ROOT": str(root / "output"),
    }
    with AirflowDeployment(root / "home", dags, env) as deployment:
        deployment.cli("pools", "set", "gemini_flex", str(POOL_SLOTS), "Gemini flex calls", "--include-deferred")
        yield deployment
