"""What every supported Airflow release must do with the installed wheel (see docs/compatibility.md).

The provider is listed, every example DAG parses, the spend plugin loads, and one DAG with a deferrable
generate task (ending in the triggerer), a worker-side generate task, ``@task.gemini_flex`` and a 40-row
enrichment runs green under ``airflow dags test`` against the emulator.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMOKE_DAGS = Path(__file__).resolve().parent / "dags"
AIRFLOW = Path(sys.executable).parent / "airflow"
API_KEY = "compat-smoke-key"


def airflow_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the ``airflow`` command of this environment; fail the test with its output when it fails."""
    result = subprocess.run(
        [str(AIRFLOW), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"airflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def cli_json(output: str) -> object:
    """Return the JSON a ``--output json`` command printed (older Airflows log a few lines before it)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("[{", "[]", "{")))
    return json.JSONDecoder().raw_decode("\n".join(lines[start:]))[0]


@pytest.fixture(scope="module")
def migrated() -> None:
    airflow_cli("db", "migrate")


def test_the_wheel_is_installed_not_the_source_tree():
    import airflow_provider_flex

    location = Path(airflow_provider_flex.__file__).resolve()
    assert location.parent != REPO / "airflow_provider_flex", "the provider was imported from the source tree"
    assert "site-packages" in location.parts, location
    dist = importlib.metadata.distribution("airflow-provider-flex")
    assert dist.version == airflow_provider_flex.__version__
    direct_url = dist.read_text("direct_url.json")
    assert direct_url is None or '"editable": true' not in direct_url.replace(" ", ": ").replace("::", ":")
    # package data the wheel must carry: the entry points Airflow finds the provider and plugin by
    groups = {entry.group for entry in dist.entry_points}
    assert {"apache_airflow_provider", "airflow.plugins"} <= groups


def test_airflow_lists_the_provider(migrated):
    listed = cli_json(airflow_cli("providers", "list", "--output", "json").stdout)
    ours = [p for p in listed if p["package_name"] == "airflow-provider-flex"]
    assert ours, [p["package_name"] for p in listed]
    assert ours[0]["version"] == importlib.metadata.version("airflow-provider-flex")
    hooks = airflow_cli("providers", "hooks", "--output", "json").stdout
    assert "gemini_flex" in hooks


def test_every_example_dag_parses():
    try:  # Airflow 3.3 moved it
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:
        from airflow.models.dagbag import DagBag

    for folder in (REPO / "dags", SMOKE_DAGS):
        bag = DagBag(dag_folder=str(folder))
        assert bag.import_errors == {}, bag.import_errors
        assert bag.dag_ids, f"no DAG found in {folder}"


def test_the_spend_plugin_loads(migrated):
    plugins = cli_json(airflow_cli("plugins", "--output", "json").stdout)
    ours = [p for p in plugins if p["name"] == "gemini_flex"]
    assert ours, plugins
    from airflow_provider_flex.compat import UI_SHOWS_EXTERNAL_VIEWS

    if UI_SHOWS_EXTERNAL_VIEWS:
        assert "Flex spend" in json.dumps(ours[0].get("external_views"))
    # the app builds on this Airflow, and asks for a signed-in user before it shows anything
    from fastapi.testclient import TestClient

    from airflow_provider_flex.plugins.spend_view import create_spend_app

    with TestClient(create_spend_app()) as client:
        assert client.get("/api/runs").status_code in (401, 403)


def test_the_smoke_dag_runs_under_dags_test(migrated, tmp_path):
    from airflow_provider_flex.emulator import FlexEmulator

    report = tmp_path / "report.json"
    with FlexEmulator(api_key=API_KEY, slots=8, service_time=(0.05, 0.2), seed=3) as emulator:
        env = {
            "AIRFLOW__CORE__DAGS_FOLDER": str(SMOKE_DAGS),
            "AIRFLOW_CONN_GEMINI_FLEX_DEFAULT": emulator.connection_json(API_KEY, initial_delay=0.2),
            "FLEX_SMOKE_OUTPUT": str(tmp_path / "output"),
            "FLEX_SMOKE_REPORT": str(report),
        }
        run = airflow_cli("dags", "test", "flex_compat_smoke", env=env)
        stats = emulator.admin.stats()
    console = run.stdout + run.stderr
    assert report.exists(), f"the check task did not run:\n{console[-4000:]}"
    seen = json.loads(report.read_text())
    assert seen["succeeded"] == 40 and seen["deferred"] and seen["decorated"], seen
    assert stats["calls"]["flex"]["ok"] == 43, stats["calls"]
    # Airflow 3.0's `dags test` echoes each request to mask a secret at debug level (its console is not
    # masked on any version); the key appears in no other line
    assert [line for line in console.splitlines() if API_KEY in line and "MaskSecret(" not in line] == []
    states = _task_states("flex_compat_smoke")
    assert states == dict.fromkeys(("deferred_generate", "worker_generate", "decorated", "enrich", "check"), "success")
    # `dags test` runs the trigger in line (and resumes the task); a real deployment is test_deployment.py
    assert "Pausing task as DEFERRED" in console, console[-4000:]


def _task_states(dag_id: str) -> dict[str, str]:
    database = Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (dag_id,)).fetchall()
    return dict(rows)


def test_the_google_genai_calls_the_provider_makes(monkeypatch):
    """Counting tokens, a stream, and a batch job sent as a JSONL file (Files API up and down), on this leg's SDK."""
    from airflow_provider_flex.emulator import FlexEmulator
    from airflow_provider_flex.emulator.batch import BatchSettings
    from airflow_provider_flex.hooks.batch import BatchRequest
    from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook

    model = "gemini-2.5-flash-lite"
    with FlexEmulator(api_key=API_KEY, slots=4, service_time=(0.01, 0.05), batch=BatchSettings(turnaround_s=0.5)) as em:
        monkeypatch.setenv("AIRFLOW_CONN_GEMINI_FLEX_DEFAULT", em.connection_json(API_KEY, initial_delay=0.2))
        hook = GeminiFlexHook()
        assert hook.count_tokens(contents="How many tokens is this?", model=model) > 0
        stream = hook.stream_content(contents="Stream a short answer", model=model)
        text = "".join(stream)
        assert text and stream.result.text == text and stream.result.service_tier == "flex"
        requests = [BatchRequest(key=f"k{i}", contents=f"Answer number {i}") for i in range(3)]
        job = hook.batches.submit(model, requests, config=None, display_name="compat-smoke", as_file=True)
        assert job.input_file, "the job was not sent as a file"
        for _ in range(200):
            job = hook.batches.get(job.name)
            if job.state not in ("pending", "running"):
                break
            time.sleep(0.1)
        assert job.state == "succeeded", job
        results = hook.batches.results(job.name, model=model, wants_json=False)
        assert sorted(line.key for line in results.lines) == ["k0", "k1", "k2"]
        assert all(line.response is not None and line.response.text for line in results.lines)
        hook.batches.delete(job.name, job.input_file)
        hook.close()
