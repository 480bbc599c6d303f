"""Vertex AI mode over HTTP with the real SDK and the real google-auth service-account flow, against the emulator."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.exceptions import FlexRequestError
from airflow_provider_flex.hooks.call import CallPacer
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.hooks.retry import Failure, FlexRetryPolicy
from airflow_provider_flex.hooks.vertex import VERTEX_INLINE_LIMIT_BYTES, tier_headers
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
from airflow_provider_flex.triggers.gemini_flex import GeminiFlexGenerateContentTrigger
from tests.hooks.conftest import run_generate, run_stream
from tests.vertex_account import service_account

MODES = ["sync", "async"]
MODEL = "gemini-2.5-flash"
FAST = FlexRetryPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.2, jitter=0.0, deadline=60)


@pytest.fixture
def vertex(monkeypatch):
    """An emulator, a service account of project flex-analytics, and the default connection in Vertex mode."""
    with FlexEmulator(seed=2) as emulator:
        account = service_account(emulator)
        monkeypatch.setenv("AIRFLOW_CONN_GEMINI_FLEX_DEFAULT", account.connection_json(emulator))
        yield emulator, account


@pytest.mark.parametrize("mode", MODES)
def test_generate_on_flex_pay_go_by_header_never_the_body(vertex, mode):
    emulator, _ = vertex
    response = run_generate(GeminiFlexHook(retry_policy=FAST), mode, contents="Tag this row", model=MODEL)
    assert response.text.startswith("Flex emulator answer")
    assert response.service_tier == "flex"  # from usageMetadata.trafficType ON_DEMAND_FLEX
    assert response.cost_usd is not None and response.usage.prompt_tokens > 0
    (call,) = emulator.admin.calls()
    assert (call["tier"], call["outcome"]) == ("flex", "ok")  # a body serviceTier would have been a 400
    assert emulator.admin.tokens()["issued"] == 1  # the real service-account flow, against the emulator


@pytest.mark.parametrize("mode", MODES)
def test_stream_and_count_tokens(vertex, mode):
    emulator, _ = vertex
    hook = GeminiFlexHook(retry_policy=FAST)
    pieces, result = run_stream(hook, mode, contents="Write a digest", model=MODEL)
    assert "".join(pieces) == result.text and result.service_tier == "flex"
    assert hook.count_tokens(contents="count these four", model=MODEL) == 3
    assert [c["method"] for c in emulator.admin.calls()] == ["stream"]


def test_flex_only_or_provisioned_throughput_first_by_headers():
    assert tier_headers("flex", "flex_only") == {
        "X-Vertex-AI-LLM-Shared-Request-Type": "flex",
        "X-Vertex-AI-LLM-Request-Type": "shared",
    }
    assert tier_headers("flex", "provisioned_then_flex") == {"X-Vertex-AI-LLM-Shared-Request-Type": "flex"}
    assert tier_headers("standard", "flex_only") == {}


def test_standard_tier_is_served_on_demand(vertex):
    emulator, _ = vertex
    response = GeminiFlexHook(retry_policy=FAST).generate_content(contents="x", model=MODEL, service_tier="standard")
    assert response.service_tier == "standard" and emulator.admin.calls()[-1]["tier"] == "standard"


def test_a_regional_location_is_refused_for_flex_before_any_call(vertex, monkeypatch):
    emulator, account = vertex
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_FLEX_DEFAULT", account.connection_json(emulator, location="us-central1"))
    with pytest.raises(ValueError, match=r"global endpoint only.*'us-central1'"):
        GeminiFlexHook(retry_policy=FAST).generate_content(contents="x", model=MODEL)
    assert emulator.admin.stats()["api_requests"] == 0


def test_an_inline_payload_over_20_mb_is_refused_before_any_call(vertex):
    emulator, _ = vertex
    with pytest.raises(ValueError, match="above Vertex AI Flex PayGo's 20 MB"):
        GeminiFlexHook(retry_policy=FAST).generate_content(contents="x" * (VERTEX_INLINE_LIMIT_BYTES + 1), model=MODEL)
    assert emulator.admin.stats()["api_requests"] == 0


def test_a_project_the_account_cannot_use_is_403(vertex, monkeypatch):
    emulator, account = vertex
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_FLEX_DEFAULT", account.connection_json(emulator, project="someone-else"))
    with pytest.raises(FlexRequestError) as refused:
        GeminiFlexHook(retry_policy=FAST).generate_content(contents="x", model=MODEL)
    assert (refused.value.code, refused.value.status) == (403, "PERMISSION_DENIED")
    assert emulator.admin.stats()["api_requests"] == 1  # not retried


def test_an_expired_token_is_refreshed(monkeypatch):
    with FlexEmulator(token_lifetime_s=226) as emulator:  # google-auth refreshes 225 s before expiry
        account = service_account(emulator)
        monkeypatch.setenv("AIRFLOW_CONN_GEMINI_FLEX_DEFAULT", account.connection_json(emulator))
        hook = GeminiFlexHook(retry_policy=FAST)
        hook.generate_content(contents="first", model=MODEL)
        time.sleep(1.5)  # the token is now within google-auth's refresh margin
        hook.generate_content(contents="second", model=MODEL)
        assert emulator.admin.tokens()["issued"] == 2
        emulator.admin.expire_tokens()  # the server forgets them: a stale token is refused with 401
        time.sleep(1.5)
        hook.generate_content(contents="third", model=MODEL)
        assert emulator.admin.tokens()["issued"] == 3
        assert [c["outcome"] for c in emulator.admin.calls()] == ["ok", "ok", "ok"]


class RecordingPacer(CallPacer):
    def __init__(self) -> None:
        self.failures: list[Failure] = []

    def on_failure(self, failure: Failure) -> None:
        self.failures.append(failure)


@pytest.mark.parametrize("mode", MODES)
def test_vertex_capacity_429_is_retried_like_a_503(vertex, mode):
    emulator, _ = vertex
    emulator.admin.inject(
        "http_error", status_code=429, details=[], message="Resource exhausted. Please try again later.", count=2
    )
    pacer = RecordingPacer()
    response = run_generate(GeminiFlexHook(retry_policy=FAST, pacer=pacer), mode, contents="x", model=MODEL)
    assert response.attempts == 3
    assert [(f.status_code, f.capacity, f.quotas) for f in pacer.failures] == [(429, True, ())] * 2


def test_emulator_sheds_vertex_flex_with_its_capacity_429():
    with FlexEmulator(preempt_rate=1.0) as emulator:
        account = service_account(emulator)
        from google import genai
        from google.genai import errors, types

        from airflow_provider_flex.hooks.vertex import VertexSettings, credentials

        settings = VertexSettings.from_extras(account.connection(emulator)["extra"], "test")
        creds, project = credentials(settings)
        client = genai.Client(
            vertexai=True,
            project=project,
            location="global",
            credentials=creds,
            http_options=types.HttpOptions(base_url=emulator.base_url, headers=tier_headers("flex", "flex_only")),
        )
        with pytest.raises(errors.ClientError) as refused:
            client.models.generate_content(model=MODEL, contents="x")
    error = refused.value.details["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert error["message"].startswith("Resource exhausted. Please try again later.") and "details" not in error


def test_a_deferred_call_in_vertex_mode(vertex):
    emulator, _ = vertex
    event = asyncio.run(anext(GeminiFlexGenerateContentTrigger(contents="judge this", model=MODEL).run()))
    assert event.payload["status"] == "success"
    assert event.payload["result"]["service_tier"] == "flex"
    assert emulator.admin.calls()[-1]["tier"] == "flex"


def test_a_small_enrichment_in_vertex_mode(vertex, tmp_path):
    emulator, _ = vertex
    rows = [{"id": f"r{i}", "text": f"row {i}"} for i in range(12)]
    summary = GeminiFlexEnrichOperator(
        task_id="enrich",
        records=rows,
        key_field="id",
        prompt_template="Tag {{ row.text }}",
        output_path=str(tmp_path),
        model=MODEL,
        retry_policy=FAST,
    ).execute(context={})
    assert (summary["succeeded"], summary["standard_tier_calls"]) == (12, 0)
    results = [json.loads(line) for f in tmp_path.glob("results-*.jsonl") for line in f.read_text().splitlines()]
    assert {r["service_tier"] for r in results} == {"flex"}
    assert {c["tier"] for c in emulator.admin.calls()} == {"flex"}
