"""What the emulator answers: the model's answer to a request, the response bodies and their transports.

A deterministic model (``model``) writes the text; this module wraps it in GenerateContentResponse
bodies with usage metadata, server-sent events for streams, and the responses that hold a serving
slot or drop a connection on purpose (faults).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from airflow_provider_flex.emulator import model as lm
from airflow_provider_flex.emulator.capacity import format_duration
from airflow_provider_flex.emulator.config import DEFAULT_OUTPUT_TOKEN_LIMIT, EmulatorConfig
from airflow_provider_flex.emulator.errors import ApiError
from airflow_provider_flex.emulator.media import generated_image
from airflow_provider_flex.emulator.quotas import QuotaExceeded
from airflow_provider_flex.emulator.requests import GenerateRequest
from airflow_provider_flex.emulator.vertex import TRAFFIC_TYPES
from airflow_provider_flex.pricing import IMAGE_OUTPUT_TOKENS


class ConnectionDropped(Exception):
    """Raised after a response started, so the server closes the connection mid-answer."""


def retry_info(delay_s: float) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format_duration(delay_s)}


def quota_error(exceeded: QuotaExceeded, details: str = "full") -> ApiError:
    """Return the 429 for broken quotas. ``details``: ``full`` (QuotaFailure, Help, RetryInfo, as the Gemini API
    documents), ``retry-only`` (RetryInfo alone) or ``none`` (no details and the terse message some 429s
    carry in the wild: "Resource has been exhausted (e.g. check quota)."; python-genai #1427 and others)."""
    if details == "none":
        return ApiError(
            429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", outcome="rate_limited"
        )
    found = exceeded.details()
    if details == "retry-only":
        found = [d for d in found if d.get("@type", "").endswith("google.rpc.RetryInfo")]
    return ApiError(429, "RESOURCE_EXHAUSTED", exceeded.message(), details=found or None, outcome="rate_limited")


@dataclass
class Answer:
    text: str
    finish_reason: str
    output_tokens: int  # text and image output tokens
    thoughts_tokens: int
    blocked: bool = False
    images: tuple[bytes, ...] = ()
    image_tokens: int = 0
    #: Prompt tokens served from the implicit cache (a part of the prompt's tokens).
    cached_tokens: int = 0


def compose_answer(request: GenerateRequest, config: EmulatorConfig, *, blocked: bool, model: str = "") -> Answer:
    """Return what the model says: a pure function of the request (an image model asked for images draws one)."""
    prompt = request.prompt
    if blocked or "[emulator:block]" in prompt:
        return Answer("", "SAFETY", 0, 0, blocked=True)
    if "IMAGE" in request.response_modalities and model in IMAGE_OUTPUT_TOKENS:
        caption = (
            f"Here is the image for: {' '.join(prompt.split()[:6])}" if "TEXT" in request.response_modalities else ""
        )
        image_tokens = IMAGE_OUTPUT_TOKENS[model]
        return Answer(
            caption,
            "STOP",
            lm.count_tokens(caption) + image_tokens,
            0,
            images=(generated_image(prompt),),
            image_tokens=image_tokens,
        )
    if request.schema is not None:
        text = (
            lm.json_answer(prompt, request.schema, model=model)
            if request.schema
            else json.dumps({"answer": lm.text_answer(prompt, model=model)})
        )
    else:
        text = lm.text_answer(
            prompt, min_tokens=config.answer_tokens[0], max_tokens=config.answer_tokens[1], model=model
        )
    finish = "STOP"
    if request.max_output_tokens is not None and lm.count_tokens(text) > request.max_output_tokens:
        text = lm.truncate_to_tokens(text, request.max_output_tokens)
        finish = "MAX_TOKENS"
    return Answer(text, finish, lm.count_tokens(text), lm.thoughts_tokens(prompt, request.thinking_budget))


def model_resource(model_id: str, config: EmulatorConfig) -> dict[str, Any]:
    return {
        "name": f"models/{model_id}",
        "baseModelId": model_id,
        "version": "emulated",
        "displayName": model_id.replace("-", " ").title(),
        "description": f"{model_id} served by the airflow-provider-flex emulator.",
        "inputTokenLimit": config.input_token_limit,
        "outputTokenLimit": DEFAULT_OUTPUT_TOKEN_LIMIT,
        "supportedGenerationMethods": [
            "generateContent",
            "streamGenerateContent",
            "countTokens",
            *(["batchGenerateContent"] if model_id in config.batch_model_ids else []),
        ],
        "temperature": 1.0,
        "maxTemperature": 2.0,
        "topP": 0.95,
        "topK": 64,
        "thinking": True,
    }


def usage_metadata(request: GenerateRequest, answer: Answer | None, tier: str, vertex: bool = False) -> dict[str, Any]:
    prompt = request.prompt_tokens
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    if answer is not None:
        usage["candidatesTokenCount"] = answer.output_tokens
        if answer.image_tokens:
            usage["candidatesTokensDetails"] = [
                {"modality": "TEXT", "tokenCount": answer.output_tokens - answer.image_tokens},
                {"modality": "IMAGE", "tokenCount": answer.image_tokens},
            ]
        if answer.thoughts_tokens:
            usage["thoughtsTokenCount"] = answer.thoughts_tokens
    tool_use = request.tool_use_prompt_tokens if answer is not None else 0
    if tool_use:
        usage["toolUsePromptTokenCount"] = tool_use
    usage["totalTokenCount"] = prompt + tool_use + (answer.output_tokens + answer.thoughts_tokens if answer else 0)
    usage["promptTokensDetails"] = lm.tokens_by_modality(request.counted_parts)
    if answer is not None and answer.cached_tokens:
        usage["cachedContentTokenCount"] = answer.cached_tokens
        usage["cacheTokensDetails"] = lm.tokens_by_modality(request.counted_parts, first=answer.cached_tokens)
    if vertex:
        usage["trafficType"] = TRAFFIC_TYPES[tier]
    else:
        usage["serviceTier"] = tier
    return usage


def response_body(
    request: GenerateRequest,
    model: str,
    tier: str,
    response_id: str,
    *,
    text: str,
    answer: Answer | None,
    finish: str | None,
    vertex: bool = False,
) -> dict[str, Any]:
    """Return one GenerateContentResponse: a whole answer, or one stream chunk (``answer`` None until the last)."""
    body: dict[str, Any] = {}
    if answer is not None and answer.blocked:
        body["promptFeedback"] = {"blockReason": "SAFETY"}
    else:
        parts: list[dict[str, Any]] = [{"text": text}] if text or answer is None or not answer.images else []
        if answer is not None:
            parts += [
                {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(image).decode()}}
                for image in answer.images
            ]
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        body["candidates"] = [candidate]
    body["usageMetadata"] = usage_metadata(request, answer, tier, vertex)
    body["modelVersion"] = model
    body["responseId"] = response_id
    return body


class HeldSlotStreamingResponse(StreamingResponse):
    """A stream that holds its serving slot until it ends, however it ends."""

    def __init__(self, content: AsyncIterator[str], *, resources: AsyncExitStack, headers: Mapping[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=dict(headers))
        self._resources = resources

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._resources.aclose()


class DroppedResponse(Response):
    """Sends headers and part of the body, then drops the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})
        raise ConnectionDropped("fault injected: connection dropped mid-answer")


@asynccontextmanager
async def cancelled_on_disconnect(request: Request) -> AsyncIterator[dict[str, bool]]:
    """Cancel the enclosed wait if the client hangs up (a client timeout frees the queue place)."""
    task = asyncio.current_task()
    assert task is not None
    flag = {"disconnected": False}

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        flag["disconnected"] = True
        task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        yield flag
    finally:
        watcher.cancel()


class DropFaultLogFilter(logging.Filter):
    """Keep injected connection drops out of the server's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


def sse(body: Mapping[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\r\n\r\n"
