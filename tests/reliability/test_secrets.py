"""The API key never leaves the connection.

`airflow dags test` prints task logs to a console that Airflow does not mask, so only
code that never prints the key passes here; the probe DAG has a deferred success, a
stream, an enrichment and a refused call, all against an emulator that accepts only
this key (so the key really was used). The metadata DB of that run holds its XComs,
rendered template fields and triggers. Task log files of a real scheduler are checked
in tests/integration/test_real_airflow.py.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import textwrap
from pathlib import Path

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.exceptions import FlexError, FlexRequestError
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.operators.gemini_flex import GeminiFlexGenerateContentOperator
from tests.deployment import AIRFLOW, airflow_env

KEY = f"AIzaSy-{secrets.token_urlsafe(24)}"

PROBE_DAG = """
import pendulum
from airflow.sdk import DAG, task
from airflow_provider_flex.operators.gemini_flex import (
    GeminiFlexEnrichOperator, GeminiFlexGenerateContentOperator, GeminiFlexStreamContentOperator,
)

with DAG("secrets_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    asked = GeminiFlexGenerateContentOperator(task_id="ask", contents="Hello {{ conn.gemini_flex_default.host }}", deferrable=True)
    GeminiFlexStreamContentOperator(task_id="stream", contents="A digest", output_path="OUTPUT/digest.md")
    GeminiFlexEnrichOperator(
        task_id="enrich", records=[{"id": str(i), "t": f"row {i}"} for i in range(5)], key_field="id",
        prompt_template="Tag {{ row.t }}", output_path="OUTPUT/enriched",
    )
    GeminiFlexGenerateContentOperator(task_id="refused", contents="hi", model="gemini-nope", deferrable=True)
    GeminiFlexEnrichOperator(
        task_id="enrich_batch", records=[{"id": str(i), "t": f"row {i}"} for i in range(3)], key_field="id",
        prompt_template="Tag {{ row.t }}", output_path="OUTPUT/batched", route="batch", batch_poll_interval=0.5,
        deferrable=True,
    )

    @task.gemini_flex(deferrable=True)
    def decorated() -> str:
        return "Say hello"

    decorated()
"""


def observed(root: Path) -> dict[str, str]:
    """Airflow's tracing on (spans printed on the console) and OpenLineage events into a file under ``root``:
    the key must be in neither."""
    return {
        "AIRFLOW__TRACES__OTEL_ON": "True",
        "OTEL_TRACES_EXPORTER": "console",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(root / "lineage.jsonl"), "append": True}
        ),
    }


def _dags_test(root: Path, level: str) -> tuple[str, dict]:
    """`airflow dags test secrets_probe` with logs at ``level``; its console and the emulator's stats."""
    dags = root / "dags"
    dags.mkdir(parents=True)
    (dags / "secrets_probe.py").write_text(textwrap.dedent(PROBE_DAG).replace("OUTPUT", str(root / "output")))
    with FlexEmulator(api_key=KEY) as emulator:
        env = airflow_env(
            root / "home",
            dags,
            AIRFLOW__LOGGING__LOGGING_LEVEL=level,
            AIRFLOW_CONN_GEMINI_FLEX_DEFAULT=emulator.connection_json(KEY, initial_delay=0.1),
            **observed(root),
        )
        console = ""
        for args in (["db", "migrate"], ["dags", "test", "secrets_probe"]):
            result = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=300)
            console += result.stdout + result.stderr
        return console, emulator.admin.stats()


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    """One run at the default level (INFO): (console, root folder, emulator stats)."""
    root = tmp_path_factory.mktemp("secrets")
    console, stats = _dags_test(root, "INFO")
    return console, root, stats


def test_the_probe_really_used_the_key(probe_run):
    console, root, stats = probe_run
    assert stats["calls"]["flex"]["ok"] == 1 + 1 + 5 + 1  # ask, stream, five rows, decorated: only KEY is accepted
    assert stats["batch_jobs"] == 0 and len(list((root / "output" / "batched").glob("results-*.jsonl"))) == 1
    assert "404 NOT_FOUND" in console  # the refused call failed, with its error on the console
    assert (root / "output" / "digest.md").exists()


def test_spans_and_lineage_were_emitted_without_the_key(probe_run):
    """The console holds the GenAI spans and the lineage file the run facets: both really were written."""
    console, root, _ = probe_run
    assert '"gen_ai.request.model"' in console and '"gemini_flex.service_tier": "flex"' in console
    lineage = (root / "lineage.jsonl").read_text()
    assert '"geminiFlex"' in lineage
    assert KEY not in console and KEY not in lineage


def test_key_is_not_on_the_unmasked_dags_test_console(probe_run):
    console, _, _ = probe_run
    assert "Flex result:" in console and "Gemini API refused the request" in console
    assert KEY not in console


def test_at_debug_only_airflows_own_test_supervisor_prints_the_key(tmp_path):
    """Upstream: `airflow dags test`'s in-process supervisor logs each mask-secret request with its value
    at DEBUG (Airflow masks a connection password by sending one). Nothing of ours prints it."""
    console, stats = _dags_test(tmp_path, "DEBUG")
    assert stats["calls"]["flex"]["ok"] == 8 and "[debug" in console
    leaking = [line for line in console.splitlines() if KEY in line]
    assert all("Sending request" in line and f"MaskSecret(value='{KEY}'" in line for line in leaking), leaking


def test_key_is_not_in_the_metadata_db_xcom_rendered_fields_or_triggers(probe_run):
    _, root, _ = probe_run
    database = root / "home" / "airflow.db"
    assert database.stat().st_size > 0
    assert KEY.encode() not in database.read_bytes()
    assert all(KEY.encode() not in path.read_bytes() for path in root.rglob("*") if path.is_file())


def test_key_is_not_in_the_trigger_serialized_form_nor_in_reprs(set_connection):
    set_connection(host="http://127.0.0.1:9", password=KEY)
    operator = GeminiFlexGenerateContentOperator(task_id="ask", contents="hi", deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context={})
    trigger = deferred.value.trigger
    hook = GeminiFlexHook()
    texts = [json.dumps(trigger.serialize()), repr(trigger), repr(operator), repr(hook), repr(hook.settings)]
    assert all(KEY not in text for text in texts)


def test_key_is_not_in_errors_from_a_refusing_or_unreachable_api(set_connection):
    with FlexEmulator(api_key="another-key-entirely") as emulator:
        set_connection(host=emulator.base_url, password=KEY)
        with pytest.raises(FlexRequestError) as refused:
            GeminiFlexHook().generate_content(contents="hi")
    set_connection(host="http://127.0.0.1:9", password=KEY, extra={"max_attempts": 1})
    with pytest.raises(FlexError) as unreachable:
        asyncio.run(GeminiFlexHook().agenerate_content(contents="hi"))
    for error in (refused.value, unreachable.value):
        chain = [error, error.__cause__, error.__context__]
        assert all(KEY not in f"{item} {item!r}" for item in chain if item is not None)


@pytest.mark.parametrize(
    "host", ["file:///etc/passwd", "ftp://proxy.internal", "gopher://x", "127.0.0.1:8080", f"ftp://u:{KEY}@h"]
)
def test_base_urls_other_than_http_are_refused_before_any_call(set_connection, host):
    set_connection(host=host, password=KEY)
    with pytest.raises(ValueError, match="http") as refused:
        GeminiFlexGenerateContentOperator(task_id="ask", contents="hi", deferrable=False).execute(context={})
    assert KEY not in str(refused.value)


# ---- Vertex AI: the service-account private key never leaves the connection either


@pytest.fixture(scope="module")
def vertex_probe_run(tmp_path_factory):
    """The probe DAG on a Vertex AI connection (service-account key in the extra), at INFO."""
    from tests.vertex_account import service_account

    root = tmp_path_factory.mktemp("vertex-secrets")
    dags = root / "dags"
    dags.mkdir(parents=True)
    (dags / "secrets_probe.py").write_text(textwrap.dedent(PROBE_DAG).replace("OUTPUT", str(root / "output")))
    with FlexEmulator() as emulator:
        account = service_account(emulator)
        env = airflow_env(
            root / "home",
            dags,
            AIRFLOW_CONN_GEMINI_FLEX_DEFAULT=account.connection_json(emulator, initial_delay=0.1),
            **observed(root),
        )
        console = ""
        for args in (["db", "migrate"], ["dags", "test", "secrets_probe"]):
            result = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=300)
            console += result.stdout + result.stderr
        return console, root, emulator.admin.stats(), account


def _key_fragments(private_key: str) -> list[str]:
    """The key's base64 body lines: any of them on a console or in a file is a leak."""
    return [line for line in private_key.splitlines() if line and not line.startswith("-----")]


def test_vertex_probe_really_used_the_service_account(vertex_probe_run):
    console, _, stats, _ = vertex_probe_run
    assert stats["calls"]["flex"]["ok"] == 8  # the batch-route task fails in Vertex mode, by design (Gemini API only)
    assert "404 NOT_FOUND" in console and "Flex result:" in console


def test_service_account_key_is_not_on_the_console_nor_in_any_file(vertex_probe_run):
    console, root, _, account = vertex_probe_run
    fragments = _key_fragments(account.private_key)
    assert all(fragment not in console for fragment in fragments)
    for path in (p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert all(fragment.encode() not in data for fragment in fragments), path


def test_service_account_key_is_not_in_reprs_trigger_payloads_or_errors(monkeypatch):
    from tests.vertex_account import service_account

    with FlexEmulator() as emulator:
        account = service_account(emulator, project="flex-analytics")
        monkeypatch.setenv(
            "AIRFLOW_CONN_GEMINI_FLEX_DEFAULT", account.connection_json(emulator, project="not-this-account")
        )
        operator = GeminiFlexGenerateContentOperator(task_id="ask", contents="hi", deferrable=True)
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute(context={})
        hook = GeminiFlexHook()
        with pytest.raises(FlexRequestError) as refused:  # 403: the account's project is not this one
            hook.generate_content(contents="hi", model="gemini-2.5-flash")
    trigger = deferred.value.trigger
    texts = [json.dumps(trigger.serialize()), repr(trigger), repr(operator), repr(hook), repr(hook.settings)]
    error = refused.value
    texts += [f"{item} {item!r}" for item in (error, error.__cause__, error.__context__) if item is not None]
    for fragment in _key_fragments(account.private_key):
        assert all(fragment not in text for text in texts)
