"""Injected faults, auth and malformed requests, as the SDK (or raw HTTP) sees them."""

from __future__ import annotations

import time

import httpx
import pytest
from google.genai import errors, types

from airflow_provider_flex.emulator.faults import ERROR_FAULTS

FLEX = types.GenerateContentConfig(service_tier="flex")
MODEL = "gemini-2.5-flash"


@pytest.mark.parametrize("kind", sorted(ERROR_FAULTS))
def test_error_fault_answers_once_in_gemini_format(emulator, client, kind):
    code, status, _ = ERROR_FAULTS[kind]
    emulator.admin.inject(kind)
    with pytest.raises(errors.APIError) as raised:
        client.models.generate_content(model=MODEL, contents="x", config=FLEX)
    assert (raised.value.code, raised.value.status) == (code, status)
    assert client.models.generate_content(model=MODEL, contents="x", config=FLEX).text
    assert emulator.admin.stats()["calls"]["flex"] == {f"fault:{kind}": 1, "ok": 1}


def test_rate_limited_fault_carries_its_retry_delay(emulator, client):
    emulator.admin.inject("rate_limited", retry_delay_s=7)
    with pytest.raises(errors.ClientError) as raised:
        client.models.generate_content(model=MODEL, contents="x", config=FLEX)
    assert raised.value.details["error"]["details"] == [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
    ]


def test_fault_count_and_order(emulator, client):
    emulator.admin.inject("unavailable", count=2)
    emulator.admin.inject("internal")
    codes = []
    for _ in range(4):
        try:
            client.models.generate_content(model=MODEL, contents="x", config=FLEX)
            codes.append(200)
        except errors.APIError as error:
            codes.append(error.code)
    assert codes == [503, 503, 500, 200]


def test_slow_fault_delays_the_answer(emulator, client):
    emulator.admin.inject("slow", delay_s=0.6)
    started = time.monotonic()
    client.models.generate_content(model=MODEL, contents="x", config=FLEX)
    assert time.monotonic() - started >= 0.6


def test_slow_answer_trips_the_client_timeout(emulator, make_client):
    emulator.admin.inject("slow", delay_s=3)
    client = make_client(emulator, timeout_ms=500)
    with pytest.raises(Exception) as raised:
        client.models.generate_content(model=MODEL, contents="x", config=FLEX)
    assert "timeout" in type(raised.value).__name__.lower()


def test_dropped_connection_mid_answer_raises(emulator, client):
    emulator.admin.inject("drop")
    with pytest.raises(Exception) as raised:
        client.models.generate_content(model=MODEL, contents="x", config=FLEX)
    assert not isinstance(raised.value, errors.APIError)
    assert "RemoteProtocolError" in type(raised.value).__name__ or "closed" in str(raised.value).lower()
    assert client.models.generate_content(model=MODEL, contents="x", config=FLEX).text


def test_dropped_stream_raises_after_some_chunks(emulator, client):
    emulator.admin.inject("drop", method="stream", after_chunks=2)
    received = []
    with pytest.raises(Exception) as raised:
        for chunk in client.models.generate_content_stream(model=MODEL, contents="long story", config=FLEX):
            received.append(chunk.text)
    assert len(received) == 2
    assert not isinstance(raised.value, errors.APIError)


def test_stream_cut_ends_quietly_without_finish_reason(emulator, client):
    emulator.admin.inject("stream_cut", after_chunks=2)
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="long story", config=FLEX))
    assert len(chunks) == 2
    assert chunks[-1].candidates[0].finish_reason is None
    full = list(client.models.generate_content_stream(model=MODEL, contents="long story", config=FLEX))
    assert len(full) > 2 and full[-1].candidates[0].finish_reason == types.FinishReason.STOP


def test_stream_cut_waits_for_a_stream_call(emulator, client):
    emulator.admin.inject("stream_cut", after_chunks=1)
    assert client.models.generate_content(model=MODEL, contents="x", config=FLEX).candidates[0].finish_reason == "STOP"
    assert len(list(client.models.generate_content_stream(model=MODEL, contents="long story", config=FLEX))) == 1


def test_non_json_body(emulator, client):
    emulator.admin.inject("non_json")
    with pytest.raises(errors.ServerError) as raised:
        client.models.generate_content(model=MODEL, contents="x", config=FLEX)
    assert raised.value.code == 502
    assert "Bad Gateway" in str(raised.value)


def test_blocked_prompt_has_no_text(emulator, client):
    emulator.admin.inject("blocked")
    response = client.models.generate_content(model=MODEL, contents="x", config=FLEX)
    assert response.text is None
    assert response.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    marker = client.models.generate_content(model=MODEL, contents="x [emulator:block]", config=FLEX)
    assert marker.text is None


def test_bad_fault_spec_is_refused(emulator):
    response = httpx.post(f"{emulator.base_url}/__emulator__/faults", json={"kind": "meteor"})
    assert response.status_code == 400
    assert "unknown fault kind" in response.json()["error"]["message"]


def test_reset_forgets_stats_and_faults(emulator, client):
    emulator.admin.inject("internal", count=5)
    emulator.admin.reset()
    assert client.models.generate_content(model=MODEL, contents="x", config=FLEX).text
    assert emulator.admin.stats()["calls"] == {"flex": {"ok": 1}}


def _post(emulator, path: str, **kwargs) -> httpx.Response:
    return httpx.post(f"{emulator.base_url}{path}", **kwargs)


def test_missing_key_is_unauthenticated(emulator):
    response = _post(emulator, f"/v1/models/{MODEL}:generateContent", json={"contents": [{"parts": [{"text": "x"}]}]})
    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"


def test_wrong_key_is_denied_when_a_key_is_set(start_emulator, make_client):
    emulator = start_emulator(api_key="right")
    wrong, right = make_client(emulator, api_key="wrong"), make_client(emulator, api_key="right")
    with pytest.raises(errors.ClientError) as raised:
        wrong.models.generate_content(model=MODEL, contents="x")
    assert (raised.value.code, raised.value.status) == (403, "PERMISSION_DENIED")
    assert right.models.generate_content(model=MODEL, contents="x").text
    body = {"contents": [{"parts": [{"text": "x"}]}]}
    assert _post(emulator, f"/v1beta/models/{MODEL}:generateContent?key=right", json=body).status_code == 200


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "Invalid JSON payload"),
        (b'{"generationConfig": {}}', "contents is not specified"),
        (b'{"contents": []}', "contents is not specified"),
        (b'{"contents": [{"parts": []}]}', "must not be empty"),
        (b'{"contents": [{"parts": [{"text": "  "}]}]}', "prompt is empty"),
        (b'{"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": "many"}}', "integers"),
        (b"[1, 2]", "Expected an object"),
    ],
)
def test_malformed_requests_are_invalid_argument(emulator, content, message):
    response = _post(emulator, f"/v1/models/{MODEL}:generateContent?key=k", content=content)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert message in error["message"]


def test_prompt_over_the_input_limit_is_invalid(start_emulator, make_client):
    emulator = start_emulator(input_token_limit=10)
    client = make_client(emulator)
    with pytest.raises(errors.ClientError) as raised:
        client.models.generate_content(model=MODEL, contents="word " * 11)
    assert raised.value.code == 400
    assert "exceeds the maximum number of tokens" in raised.value.message


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/v1/nothing", 404),
        ("POST", f"/v1/models/{MODEL}:explode?key=k", 404),
        ("GET", f"/v2/models/{MODEL}?key=k", 404),
        ("DELETE", f"/v1/models/{MODEL}?key=k", 405),
    ],
)
def test_unknown_routes_answer_in_gemini_format(emulator, method, path, code):
    response = httpx.request(method, f"{emulator.base_url}{path}")
    assert response.status_code == code
    assert set(response.json()["error"]) == {"code", "message", "status"}
