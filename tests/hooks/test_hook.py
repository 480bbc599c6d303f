"""Connection settings, results, cost, secrets and registration of GeminiFlexHook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from airflow_provider_flex.arguments import normalize_tier
from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.exceptions import FlexError, FlexRequestError
from airflow_provider_flex.hooks.connection import DEFAULT_TIMEOUT_S
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.hooks.results import served_tier
from airflow_provider_flex.hooks.retry import FlexRetryPolicy, parse_retry_delay, plan_retry
from airflow_provider_flex.pricing import token_cost
from tests.hooks.conftest import API_KEY, FAST, run_generate


class Verdict(pydantic.BaseModel):
    label: str
    score: int
    reasons: list[str]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_response_carries_text_usage_tier_cost(hook, emulator, mode):
    response = run_generate(hook, mode, contents="Tag: garden hose", model="gemini-2.5-flash")
    usage = response.usage
    assert response.model == "gemini-2.5-flash"
    assert (response.service_tier, response.finish_reason, response.attempts) == ("flex", "STOP", 1)
    assert usage.prompt_tokens == hook.count_tokens(contents="Tag: garden hose", model="gemini-2.5-flash")
    assert usage.total_tokens == usage.prompt_tokens + usage.output_tokens + usage.thoughts_tokens
    expected = (usage.prompt_tokens * 0.15 + (usage.output_tokens + usage.thoughts_tokens) * 1.25) / 1e6
    assert response.cost_usd == pytest.approx(expected)
    assert emulator.admin.stats()["tokens"]["flex"]["output"] == usage.output_tokens


def test_flex_costs_half_of_standard():
    flex = token_cost(1000, 500, model="gemini-2.5-pro", tier="flex")
    standard = token_cost(1000, 500, model="models/gemini-2.5-pro", tier="standard")
    assert flex == pytest.approx(standard / 2)
    assert token_cost(1000, 500, model="gemini-2.5-pro", tier="priority") is None


def test_unknown_model_cost_is_none_with_one_warning(set_connection, times_logged):
    with FlexEmulator(models=("gemini-future",)) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        hook = GeminiFlexHook(retry_policy=FAST)
        assert hook.generate_content(contents="a", model="gemini-future").cost_usd is None
        assert hook.generate_content(contents="b", model="gemini-future").cost_usd is None
    assert times_logged("No price for model gemini-future") == 1


def test_user_price_table_overrides(connection):
    from airflow_provider_flex.pricing import TokenPrice

    prices = {"gemini-3-flash-preview": {"flex": TokenPrice(1_000_000, 0)}}
    response = GeminiFlexHook(retry_policy=FAST, prices=prices).generate_content(contents="four words right here")
    assert response.cost_usd == response.usage.prompt_tokens


def test_structured_output_and_json_safe_dict(hook):
    config = {"response_mime_type": "application/json", "response_schema": Verdict, "system_instruction": "Judge."}
    response = hook.generate_content(contents="Is this answer right?", config=config)
    assert isinstance(response.parsed, Verdict)
    as_dict = response.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["parsed"] == response.parsed.model_dump()
    assert set(as_dict["usage"]) == {
        "prompt_tokens",
        "output_tokens",
        "thoughts_tokens",
        "cached_tokens",
        "total_tokens",
        "image_output_tokens",
        "audio_prompt_tokens",
        "audio_cached_tokens",
        "tool_use_prompt_tokens",
    }
    assert as_dict["images"] == []


def test_hook_owns_the_tier_and_validates_it(hook, emulator):
    hook.generate_content(contents="x", config={"service_tier": "standard"})
    assert emulator.admin.stats()["calls_by_tier"] == {"flex": 1}
    with pytest.raises(ValueError, match="Unknown service tier 'cheap'"):
        hook.generate_content(contents="x", service_tier="cheap")


@pytest.mark.parametrize(
    ("spelling", "tier"), [("FLEX", "flex"), ("SERVICE_TIER_STANDARD", "standard"), ("priority", "priority")]
)
def test_normalize_tier(spelling, tier):
    assert normalize_tier(spelling) == tier


def test_served_tier_prefers_the_header():
    assert served_tier({"x-gemini-service-tier": "standard"}, "flex") == "standard"
    assert served_tier({}, "flex") == "flex"
    assert served_tier({"x-gemini-service-tier": "odd"}, "flex") == "flex"


# --- the retry schedule as a pure function


def test_plan_retry_grows_exponentially_up_to_max_delay():
    policy = FlexRetryPolicy(initial_delay=1, multiplier=2, max_delay=5, jitter=0, max_attempts=10, deadline=1000)
    waits = [plan_retry(policy, attempt=n, elapsed_s=0, server_delay_s=None, jitter_draw=0.5) for n in range(1, 6)]
    assert waits == [1, 2, 4, 5, 5]


def test_plan_retry_jitter_adds_at_most_its_fraction():
    policy = FlexRetryPolicy(initial_delay=10, jitter=0.5, deadline=1000)
    assert plan_retry(policy, attempt=1, elapsed_s=0, server_delay_s=None, jitter_draw=0.999) < 15
    assert plan_retry(policy, attempt=1, elapsed_s=0, server_delay_s=None, jitter_draw=0) == 10


def test_plan_retry_waits_at_least_the_server_delay():
    policy = FlexRetryPolicy(initial_delay=0.1, jitter=0, deadline=1000)
    assert plan_retry(policy, attempt=1, elapsed_s=0, server_delay_s=53, jitter_draw=0) == 53


def test_plan_retry_gives_up_at_attempts_or_deadline():
    policy = FlexRetryPolicy(initial_delay=10, jitter=0, max_attempts=3, deadline=100)
    assert plan_retry(policy, attempt=3, elapsed_s=0, server_delay_s=None, jitter_draw=0) is None
    assert plan_retry(policy, attempt=1, elapsed_s=91, server_delay_s=None, jitter_draw=0) is None
    assert plan_retry(policy, attempt=1, elapsed_s=0, server_delay_s=100, jitter_draw=0) is None


@pytest.mark.parametrize(
    ("body", "headers", "delay"),
    [
        (
            {"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "53s"}]}},
            None,
            53,
        ),
        (
            {"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.250s"}]}},
            None,
            0.25,
        ),
        (
            {"error": {"details": [{"@type": "x/google.rpc.RetryInfo", "retryDelay": {"seconds": 2, "nanos": 5e8}}]}},
            None,
            2.5,
        ),
        ({"error": {"details": [{"@type": "type.googleapis.com/google.rpc.Help"}]}}, {"retry-after": "7"}, 7),
        ({"error": {}}, None, None),
        (None, None, None),
    ],
)
def test_parse_retry_delay(body, headers, delay):
    assert parse_retry_delay(body, headers) == delay


def test_policy_validation_names_the_field():
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        FlexRetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="unknown field"):
        FlexRetryPolicy.from_value({"attempts": 3})
    assert FlexRetryPolicy.from_value(FlexRetryPolicy(max_attempts=2).to_dict()) == FlexRetryPolicy(max_attempts=2)


# --- connection settings


def test_arguments_override_extras_which_override_defaults(emulator, set_connection):
    extras = json.dumps({"timeout": "120", "max_attempts": "4", "deadline": 600, "fallback_to_standard": "true"})
    set_connection(host=emulator.base_url, password=API_KEY, extra=extras)
    from_extras = GeminiFlexHook().settings
    assert from_extras.timeout == 120
    assert from_extras.retry_policy == FlexRetryPolicy(max_attempts=4, deadline=600, fallback_to_standard=True)
    explicit = GeminiFlexHook(retry_policy=FlexRetryPolicy(max_attempts=2), timeout=30).settings
    assert (explicit.timeout, explicit.retry_policy.max_attempts) == (30, 2)
    set_connection(host=emulator.base_url, password=API_KEY)
    defaults = GeminiFlexHook().settings
    assert (defaults.timeout, defaults.retry_policy) == (DEFAULT_TIMEOUT_S, FlexRetryPolicy())


def test_bad_extra_names_the_field(emulator, set_connection):
    set_connection(host=emulator.base_url, password=API_KEY, extra=json.dumps({"max_attempts": "lots"}))
    with pytest.raises(ValueError, match="max_attempts must be a int, got 'lots'"):
        GeminiFlexHook().generate_content(contents="x")


@pytest.mark.parametrize("host", ["ftp://example.com", "file:///etc/passwd", "example.com"])
def test_base_url_must_be_http(set_connection, host):
    set_connection(host=host, password=API_KEY)
    with pytest.raises(ValueError, match="base URL must be an http:// or https:// URL"):
        GeminiFlexHook().generate_content(contents="x")


def test_missing_key_is_a_clear_error(set_connection, monkeypatch):
    set_connection(host="http://127.0.0.1:9")
    with pytest.raises(FlexError, match="has no API key"):
        GeminiFlexHook().generate_content(contents="x")


def test_key_from_environment_when_password_is_empty(emulator, set_connection, monkeypatch):
    set_connection(host=emulator.base_url)
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    assert GeminiFlexHook(retry_policy=FAST).generate_content(contents="x").text


def test_test_connection(emulator, set_connection):
    set_connection(host=emulator.base_url, password=API_KEY)
    assert GeminiFlexHook().test_connection() == (True, "Connection works: model gemini-3-flash-preview is available.")
    set_connection(host=emulator.base_url, password=API_KEY, extra=json.dumps({"default_model": "gemini-0"}))
    ok, message = GeminiFlexHook().test_connection()
    assert not ok and "404" in message


def test_test_connection_with_a_refused_key_never_shows_it(set_connection):
    with FlexEmulator(api_key="the-right-key") as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        ok, message = GeminiFlexHook().test_connection()
    assert not ok and "403" in message and API_KEY not in message


# --- secrets


def test_api_key_never_appears_in_logs_errors_reprs_or_results(set_connection, captured_logs):
    with FlexEmulator(api_key=API_KEY) as emulator:
        set_connection(host=emulator.base_url, password=API_KEY)
        hook = GeminiFlexHook(retry_policy=FAST)
        emulator.admin.inject("unavailable")
        response = hook.generate_content(contents="x")
        emulator.admin.inject("invalid_argument")
        with pytest.raises(FlexRequestError) as raised:
            hook.generate_content(contents="x")
        texts = [captured_logs(), str(raised.value), repr(raised.value), repr(hook), repr(hook.settings)]
        texts.append(json.dumps(response.to_dict()))
    assert all(API_KEY not in text for text in texts)


def test_provider_registration_via_the_airflow_cli(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    airflow = Path(sys.executable).parent / "airflow"
    hooks = subprocess.run([airflow, "providers", "hooks"], env=env, capture_output=True, text=True, timeout=120)
    assert hooks.returncode == 0, hooks.stderr
    line = next(line for line in hooks.stdout.splitlines() if line.startswith("gemini_flex"))
    assert "airflow_provider_flex.hooks.gemini_flex.GeminiFlexHook" in line
    assert "gemini_flex_conn_id" in line and "Gemini Flex" in line
    providers = subprocess.run([airflow, "providers", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert "airflow-provider-flex" in providers.stdout


def test_importing_the_hook_does_not_import_google_genai():
    code = "import sys, airflow_provider_flex.hooks.gemini_flex; print('google.genai' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
