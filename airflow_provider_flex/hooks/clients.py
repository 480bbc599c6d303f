"""What every flex call in a process shares: one google-genai client per (key, endpoint), and turns to start.

A triggerer holds up to a thousand deferred calls on one event loop. Each hook
building its own client (SSL context, connection pool, pydantic schemas) costs
hundreds of kilobytes per waiting call; one client per (project key, base URL,
API version) serves them all (the SDK keeps one connection pool per event loop
inside it). Starting a call is a few milliseconds of synchronous SDK work
(request building); fifty triggers starting in one pass of the loop would stall
every other trigger for all of it, so :func:`wait_for_loop_pass` hands out one start per
loop pass.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from airflow_provider_flex.process_state import PROCESS

if TYPE_CHECKING:
    from google import genai

    from airflow_provider_flex.hooks.connection import ConnectionSettings


def _client_key(settings: ConnectionSettings) -> tuple[str, str | None]:
    return (f"{settings.project}|{settings.base_url or ''}", settings.api_version)


def shared_client(settings: ConnectionSettings) -> genai.Client:
    """Return the process's client for these settings' key (or Vertex AI account) and endpoint, built on first use."""
    key = _client_key(settings)
    with PROCESS.lock:
        client = PROCESS.clients.get(key)
        if client is None:
            client = PROCESS.clients[key] = _new_client(settings)
        return client


def _new_client(settings: ConnectionSettings) -> genai.Client:
    from google import genai
    from google.genai import types

    http_options = types.HttpOptions(base_url=settings.base_url, api_version=settings.api_version)
    if settings.vertex is None:
        return genai.Client(api_key=settings.api_key, http_options=http_options)
    from airflow_provider_flex.hooks.vertex import credentials

    creds, project = credentials(settings.vertex)
    return genai.Client(
        vertexai=True,
        project=project,
        location=settings.vertex.location,
        credentials=creds,
        http_options=http_options,
    )


def _sample_answer() -> dict[str, Any]:
    """Return an answer with every part the API sends (built afresh: the parser mutates it)."""
    details = [{"modality": "TEXT", "tokenCount": 1}]
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": "x", "thought": True}, {"inlineData": {"mimeType": "image/png", "data": ""}}],
                },
                "finishReason": "STOP",
                "index": 0,
                "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}],
            }
        ],
        "promptFeedback": {"blockReason": "OTHER"},
        "usageMetadata": {
            "promptTokenCount": 1,
            "candidatesTokenCount": 1,
            "thoughtsTokenCount": 1,
            "cachedContentTokenCount": 1,
            "totalTokenCount": 4,
            "promptTokensDetails": details,
            "candidatesTokensDetails": details,
            "cacheTokensDetails": details,
            "trafficType": "ON_DEMAND",
        },
        "modelVersion": "x",
        "responseId": "x",
    }


def warm_sdk(settings: ConnectionSettings) -> None:
    """google-genai's one-time work, once per process: imports, the client, pydantic schema building.

    Blocking (~0.2 s): the async path runs it in a thread, off the event loop.
    """
    client = shared_client(settings)
    if PROCESS.sdk_warm:
        return
    import anyio
    from google.genai import models, types

    from airflow_provider_flex.hooks.request import request_config

    anyio.run(anyio.sleep, 0)  # loads anyio's asyncio backend, which httpx imports on its first connection
    # Request and response types build their schemas lazily, each nested type the first time a call holds
    # one: build a request as our calls do and parse an answer with every part the API returns.
    caller_config = types.GenerateContentConfig(
        response_mime_type="application/json", response_json_schema={"type": "object"}, system_instruction="x"
    )
    flex_mode = settings.vertex.flex_mode if settings.vertex else None
    config = request_config(caller_config, "flex", 1_000_000, flex_mode)
    contents = [types.Part(text="x"), types.Part.from_bytes(data=b"x", mime_type="image/png")]
    with contextlib.suppress(Exception):  # private helpers: a new SDK may move them, and warming is only a head start
        request = types._GenerateContentParameters(model="x", contents=contents, config=config)
        to_wire = (
            models._GenerateContentParameters_to_vertex
            if client.vertexai
            else models._GenerateContentParameters_to_mldev
        )
        to_wire(client._api_client, request, None, request)
        types.GenerateContentResponse._from_response(response=_sample_answer(), kwargs={})
    PROCESS.sdk_warm = True


def sdk_is_warm(settings: ConnectionSettings) -> bool:
    return PROCESS.sdk_warm and _client_key(settings) in PROCESS.clients
