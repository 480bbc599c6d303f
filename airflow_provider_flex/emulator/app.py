"""The emulator's HTTP surface: the Gemini API calls the SDK makes, plus admin endpoints.

API routes live under ``/v1`` and ``/v1beta``; test controls live under
``/__emulator__``, a prefix no Gemini path can take.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import random
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from airflow_provider_flex.emulator import model as lm
from airflow_provider_flex.emulator.batch import BatchEndpoints, BatchJobs
from airflow_provider_flex.emulator.capacity import Capacity, CapacityRefusal, format_duration
from airflow_provider_flex.emulator.config import (
    DEFAULT_OUTPUT_TOKEN_LIMIT,
    DEFAULT_SERVER_TIMEOUT_S,
    EmulatorConfig,
)
from airflow_provider_flex.emulator.errors import ApiError
from airflow_provider_flex.emulator.faults import (
    API_STATUS_BY_CODE,
    ERROR_FAULTS,
    Fault,
    FaultQueue,
    FaultSpecError,
    parse_fault,
)
from airflow_provider_flex.emulator.files import FileStore
from airflow_provider_flex.emulator.media import decode_inline, generated_image, media_tokens
from airflow_provider_flex.emulator.quotas import QuotaBook, QuotaExceeded
from airflow_provider_flex.emulator.vertex import (
    CAPACITY_MESSAGE,
    TRAFFIC_TYPES,
    VERTEX_API_VERSIONS,
    TokenIssuer,
    VertexError,
    vertex_tier,
)
from airflow_provider_flex.pricing import IMAGE_OUTPUT_TOKENS

ADMIN_PREFIX = "/__emulator__"
API_VERSIONS = ("v1", "v1beta")
SERVICE_TIER_HEADER = "x-gemini-service-tier"
_TIER_ALIASES = {"flex": "flex", "standard": "standard", "priority": "priority", "unspecified": "standard"}

log = logging.getLogger(__name__)


class ConnectionDropped(Exception):
    """Raised after a response started, so the server closes the connection mid-answer."""


def retry_info(delay_s: float) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format_duration(delay_s)}


def quota_error(exceeded: QuotaExceeded) -> ApiError:
    return ApiError(429, "RESOURCE_EXHAUSTED", exceeded.message(), details=exceeded.details(), outcome="rate_limited")


def normalize_tier(value: Any) -> str:
    """The tier named by any spelling the API accepts (``flex``, ``FLEX``, ``SERVICE_TIER_FLEX``)."""
    if value is None:
        return "standard"
    if not isinstance(value, str):
        raise ApiError(400, "INVALID_ARGUMENT", f"Invalid value for service_tier: {value!r}")
    tier = _TIER_ALIASES.get(value.strip().lower().removeprefix("service_tier_"))
    if tier is None:
        raise ApiError(400, "INVALID_ARGUMENT", f"Invalid value at 'service_tier': \"{value}\"")
    return tier


def _pick(mapping: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in mapping:
            return mapping[name]
    return None


@dataclass
class GenerateRequest:
    """The parts of a generateContent body the emulator acts on."""

    contents: list[Any]
    system_instruction: Any
    tier: str
    max_output_tokens: int | None
    schema: Mapping[str, Any] | None
    thinking_budget: int | None
    response_modalities: tuple[str, ...] = ("TEXT",)
    part_tokens: Callable[[Mapping[str, Any]], int] | None = None

    @cached_property
    def prompt(self) -> str:
        """The prompt's text, with a short digest standing for each media part (so answers differ by image)."""
        system_text = lm.content_text(self.system_instruction)[0] if self.system_instruction else ""
        text = (
            f"{system_text}\n{lm.content_text(self.contents)[0]}" if system_text else lm.content_text(self.contents)[0]
        )
        media = [
            f"[{p['type']}:{hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()[:8]}]"
            for p in self.parts
            if p["type"] != "text"
        ]
        return " ".join([text, *media]) if media else text

    @cached_property
    def parts(self) -> list[dict[str, Any]]:
        return lm.parts_summary(self.contents)

    @cached_property
    def prompt_tokens(self) -> int:
        return lm.prompt_tokens(self.contents, self.system_instruction, self.part_tokens)


def _validate_contents(contents: Any) -> list[Any]:
    if contents is None:
        raise ApiError(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified")
    if isinstance(contents, dict):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        raise ApiError(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified")
    for index, content in enumerate(contents):
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not parts:
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"* GenerateContentRequest.contents[{index}].parts: contents.parts must not be empty.",
            )
    text, other_parts = lm.content_text(contents)
    if not text.strip() and not other_parts:
        raise ApiError(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: the prompt is empty.")
    return contents


def parse_generate_request(body: Any, part_tokens: Callable[[Mapping[str, Any]], int] | None = None) -> GenerateRequest:
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object.")
    config = _pick(body, "generationConfig", "generation_config") or {}
    if not isinstance(config, dict):
        raise ApiError(400, "INVALID_ARGUMENT", "Invalid JSON payload received. generationConfig must be an object.")
    mime = _pick(config, "responseMimeType", "response_mime_type")
    schema = _pick(config, "responseJsonSchema", "response_json_schema", "_responseJsonSchema")
    if schema is None:
        schema = _pick(config, "responseSchema", "response_schema")
    if schema is not None and mime != "application/json":
        raise ApiError(400, "INVALID_ARGUMENT", "responseSchema requires responseMimeType 'application/json'.")
    if schema is not None and not isinstance(schema, dict):
        raise ApiError(400, "INVALID_ARGUMENT", "responseSchema must be an object.")
    max_tokens = _pick(config, "maxOutputTokens", "max_output_tokens")
    thinking = _pick(config, "thinkingConfig", "thinking_config") or {}
    budget = _pick(thinking, "thinkingBudget", "thinking_budget") if isinstance(thinking, dict) else None
    try:
        max_tokens = None if max_tokens is None else int(max_tokens)
        budget = None if budget is None else int(budget)
    except (TypeError, ValueError):
        raise ApiError(400, "INVALID_ARGUMENT", "maxOutputTokens and thinkingBudget must be integers.") from None
    if max_tokens is not None and max_tokens < 1:
        raise ApiError(400, "INVALID_ARGUMENT", "maxOutputTokens must be positive.")
    if schema is None and mime == "application/json":
        schema = {}
    modalities = _pick(config, "responseModalities", "response_modalities") or ["TEXT"]
    if not isinstance(modalities, list) or not all(str(m).upper() in ("TEXT", "IMAGE", "AUDIO") for m in modalities):
        raise ApiError(400, "INVALID_ARGUMENT", f"Invalid responseModalities: {modalities!r}")
    return GenerateRequest(
        contents=_validate_contents(body.get("contents")),
        system_instruction=_pick(body, "systemInstruction", "system_instruction"),
        tier=normalize_tier(_pick(body, "serviceTier", "service_tier")),
        max_output_tokens=max_tokens,
        schema=schema,
        thinking_budget=budget,
        response_modalities=tuple(str(m).upper() for m in modalities),
        part_tokens=part_tokens,
    )


@dataclass
class Answer:
    text: str
    finish_reason: str
    output_tokens: int  # text and image output tokens
    thoughts_tokens: int
    blocked: bool = False
    images: tuple[bytes, ...] = ()
    image_tokens: int = 0


def compose_answer(request: GenerateRequest, config: EmulatorConfig, *, blocked: bool, model: str = "") -> Answer:
    """What the model says: a pure function of the request (an image model asked for images draws one)."""
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
            lm.json_answer(prompt, request.schema) if request.schema else json.dumps({"answer": lm.text_answer(prompt)})
        )
    else:
        text = lm.text_answer(prompt, min_tokens=config.answer_tokens[0], max_tokens=config.answer_tokens[1])
    finish = "STOP"
    if request.max_output_tokens is not None and lm.count_tokens(text) > request.max_output_tokens:
        text = lm.truncate_to_tokens(text, request.max_output_tokens)
        finish = "MAX_TOKENS"
    return Answer(text, finish, lm.count_tokens(text), lm.thoughts_tokens(prompt, request.thinking_budget))


class Stats:
    """Counters the admin endpoint reports."""

    def __init__(self, log_size: int) -> None:
        self.calls: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.tokens: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.call_log: deque[dict[str, Any]] = deque(maxlen=log_size)
        self.sequence = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.api_requests = 0

    def record(
        self,
        *,
        model: str,
        tier: str,
        method: str,
        outcome: str,
        prompt: str,
        prompt_tokens: int,
        answer: Answer | None,
        parts: list[dict[str, Any]] | None = None,
    ) -> None:
        self.calls[tier][outcome] += 1
        if answer is not None:
            usage = self.tokens[tier]
            usage["prompt"] += prompt_tokens
            usage["output"] += answer.output_tokens
            usage["thoughts"] += answer.thoughts_tokens
        self.sequence += 1
        self.call_log.append(
            {
                "seq": self.sequence,
                "time": time.time(),
                "model": model,
                "tier": tier,
                "method": method,
                "outcome": outcome,
                "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
                "prompt": prompt[:200],
                "prompt_tokens": prompt_tokens,
                "parts": parts or [],
                "images_out": len(answer.images) if answer is not None else 0,
            }
        )

    @asynccontextmanager
    async def tracking_in_flight(self) -> AsyncIterator[None]:
        self.api_requests += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1


def media_part_tokens(files: FileStore, part: Mapping[str, Any]) -> int:
    """Prompt tokens of a media part: an inline image by its size, an uploaded file by its content."""
    inline = decode_inline(dict(part))
    if inline is not None:
        return media_tokens(*inline)
    file_data = part.get("fileData") or part.get("file_data")
    if isinstance(file_data, Mapping):
        uri = str(file_data.get("fileUri") or file_data.get("file_uri") or "")
        stored = files.by_uri(uri)
        if stored is None or not stored.complete:
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                f"You do not have permission to access the File {uri.rsplit('/', 1)[-1]} or it may not exist.",
            )
        return media_tokens(stored.mime_type, bytes(stored.data))
    return lm.NON_TEXT_PART_TOKENS


class EmulatorState:
    """Everything one emulator instance knows; lives on the server's event loop."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.faults = FaultQueue()
        self.tokens = TokenIssuer(config.token_lifetime_s)  # kept across resets: clients hold their tokens
        self.files = FileStore()  # kept across resets too: uploaded files live until deleted
        self.reset()

    def part_tokens(self, part: Mapping[str, Any]) -> int:
        return media_part_tokens(self.files, part)

    def batch_request_tokens(self, body: Mapping[str, Any]) -> int:
        """Prompt tokens of one request inside a batch job (ApiError if it is not a valid request)."""
        return parse_generate_request(body, self.part_tokens).prompt_tokens

    def batch_answer(self, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """One batch line's GenerateContentResponse, as a generateContent call would answer it."""
        request = parse_generate_request(body, self.part_tokens)
        answer = compose_answer(request, self.config, blocked=False, model=model)
        response = _response_body(
            request,
            model,
            "standard",
            uuid.uuid4().hex[:22],
            text=answer.text,
            answer=answer,
            finish=answer.finish_reason,
        )
        response["usageMetadata"].pop("serviceTier", None)  # a batch line is not served on an online tier
        return response

    def reset(self) -> None:
        config = self.config
        self.rng = random.Random(config.seed)
        self.capacity = Capacity(config.slots, config.queue_depth)
        default, per_model = config.model_quotas()
        self.quotas = QuotaBook(default=default, per_model=per_model, window=config.quota_window, rps=config.rps)
        self.stats = Stats(config.call_log_size)
        self.faults.clear()
        self.batches = BatchJobs(
            config.batch,
            self.files,
            count_tokens=self.batch_request_tokens,
            answer=self.batch_answer,
            rng=random.Random(config.seed),
        )

    def snapshot(self) -> dict[str, Any]:
        capacity = self.capacity
        calls = {tier: dict(counter) for tier, counter in self.stats.calls.items()}
        return {
            "calls": calls,
            "calls_by_tier": {tier: sum(counter.values()) for tier, counter in calls.items()},
            "tokens": {tier: dict(counter) for tier, counter in self.stats.tokens.items()},
            "requests": self.stats.sequence,
            "api_requests": self.stats.api_requests,
            "in_flight": self.stats.in_flight,
            "peak_in_flight": self.stats.peak_in_flight,
            "in_service": capacity.in_service,
            "peak_in_service": capacity.peak_in_service,
            "queue_depth": {tier: capacity.queued(tier) for tier in capacity.queues},
            "peak_queue_depth": capacity.peak_queued,
            "pending_faults": len(self.faults.pending()),
            "quota_refusals": dict(self.quotas.refusals),
            "batch_jobs": len(self.batches.jobs),
        }


def _model_resource(model_id: str, config: EmulatorConfig) -> dict[str, Any]:
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


def _usage(request: GenerateRequest, answer: Answer | None, tier: str, vertex: bool = False) -> dict[str, Any]:
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
    usage["totalTokenCount"] = prompt + (answer.output_tokens + answer.thoughts_tokens if answer else 0)
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]  # text and media together here
    if vertex:
        usage["trafficType"] = TRAFFIC_TYPES[tier]
    else:
        usage["serviceTier"] = tier
    return usage


def _response_body(
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
    """One GenerateContentResponse: a whole answer, or one stream chunk (``answer`` None until the last)."""
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
    body["usageMetadata"] = _usage(request, answer, tier, vertex)
    body["modelVersion"] = model
    body["responseId"] = response_id
    return body


class _HeldSlotStreamingResponse(StreamingResponse):
    """A stream that holds its serving slot until it ends, however it ends."""

    def __init__(self, content: AsyncIterator[str], *, resources: AsyncExitStack, headers: Mapping[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=dict(headers))
        self._resources = resources

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._resources.aclose()


class _DroppedResponse(Response):
    """Sends headers and part of the body, then drops the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})
        raise ConnectionDropped("fault injected: connection dropped mid-answer")


@asynccontextmanager
async def _cancelled_on_disconnect(request: Request) -> AsyncIterator[dict[str, bool]]:
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


class _DropFaultLogFilter(logging.Filter):
    """Keep injected connection drops out of the server's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


def _sse(body: Mapping[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\r\n\r\n"


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    """The emulator as an ASGI app; ``app.state.emulator`` holds its state."""
    config = config or EmulatorConfig()
    state = EmulatorState(config)
    logging.getLogger("uvicorn.error").addFilter(_DropFaultLogFilter())

    part_tokens = state.part_tokens

    def authenticate(request: Request) -> str:
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not key:
            raise ApiError(
                401,
                "UNAUTHENTICATED",
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        if config.api_key is not None and key != config.api_key:
            raise ApiError(403, "PERMISSION_DENIED", "API key not valid. Please pass a valid API key.")
        return key

    def known_model(version: str, model: str, method: str) -> str:
        if version not in API_VERSIONS:
            raise ApiError(404, "NOT_FOUND", f"API version {version!r} is not served by this emulator.")
        model_id = model.removeprefix("models/")
        if model_id not in config.models:
            raise ApiError(
                404,
                "NOT_FOUND",
                f"models/{model_id} is not found for API version {version}, or is not supported for {method}. "
                "Call ListModels to see the list of available models and their supported methods.",
            )
        return model_id

    async def read_json(request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}") from None

    batch = BatchEndpoints(lambda: state.batches, authenticate=authenticate, read_json=read_json)

    def server_timeout(request: Request) -> float:
        try:
            return max(0.0, float(request.headers.get("x-server-timeout", DEFAULT_SERVER_TIMEOUT_S)))
        except ValueError:
            return DEFAULT_SERVER_TIMEOUT_S

    def admit(request: GenerateRequest, model: str, key: str) -> None:
        try:
            state.quotas.admit(key, model, request.prompt_tokens)
        except QuotaExceeded as exceeded:
            raise quota_error(exceeded) from None

    def fault_error(fault: Fault) -> ApiError:
        if fault.kind == "http_error":
            code = fault.status_code
            status = API_STATUS_BY_CODE.get(code, "UNKNOWN")
            message = f"Injected HTTP {code} ({status})."
        else:
            code, status, message = ERROR_FAULTS[fault.kind]
        details = fault.details
        if fault.kind == "rate_limited" and details is None:
            details = [retry_info(fault.retry_delay_s if fault.retry_delay_s is not None else 1.0)]
        return ApiError(code, status, fault.message or message, details=details, outcome=f"fault:{fault.kind}")

    async def generate(
        request: Request, model: str, key: str, *, stream: bool, vertex_location: str | None = None
    ) -> Response:
        """One generate call; on Vertex routes (``vertex_location``) the tier comes from the headers."""
        method = "stream" if stream else "generate"
        vertex = vertex_location is not None
        body_json = await read_json(request)
        if vertex:
            try:
                tier = vertex_tier(request.headers, vertex_location, body_json)
            except VertexError as refusal:
                raise ApiError(refusal.code, refusal.status, refusal.message, details=refusal.details) from None
        parsed = parse_generate_request(body_json, part_tokens)
        tier = tier if vertex else parsed.tier
        prompt = parsed.prompt

        def record(outcome: str, answer: Answer | None = None) -> None:
            state.stats.record(
                model=model,
                tier=tier,
                method=method,
                outcome=outcome,
                prompt=prompt,
                prompt_tokens=parsed.prompt_tokens,
                answer=answer,
                parts=parsed.parts,
            )

        try:
            if parsed.prompt_tokens > config.input_token_limit:
                raise ApiError(
                    400,
                    "INVALID_ARGUMENT",
                    f"The input token count ({parsed.prompt_tokens}) exceeds the maximum number of tokens allowed "
                    f"({config.input_token_limit}).",
                )
            fault = state.faults.take(method)
            if fault is not None and (fault.kind in ERROR_FAULTS or fault.kind == "http_error"):
                raise fault_error(fault)
            if not vertex:  # Vertex AI meters flex by its dynamic shared quota, not per-project quotas
                admit(parsed, model, key)
            answer = compose_answer(parsed, config, blocked=fault is not None and fault.kind == "blocked", model=model)
        except ApiError as error:
            record(error.outcome)
            raise

        preempt = tier == "flex" and config.preempt_rate > 0 and state.rng.random() < config.preempt_rate
        service_s = state.rng.uniform(*config.service_time)
        extra_delay = fault.delay_s if fault is not None and fault.kind == "slow" else 0.0
        headers = {} if vertex else {SERVICE_TIER_HEADER: tier}
        response_id = uuid.uuid4().hex[:22]
        resources = AsyncExitStack()
        try:
            async with _cancelled_on_disconnect(request) as watch:
                try:
                    await resources.enter_async_context(
                        state.capacity.slot(tier, queue_timeout_s=server_timeout(request), preempt=preempt)
                    )
                    await asyncio.sleep(extra_delay + (0.0 if stream else service_s))
                except asyncio.CancelledError:
                    await resources.aclose()
                    if not watch["disconnected"]:
                        raise
                    asyncio.current_task().uncancel()  # type: ignore[union-attr]
                    record("cancelled")
                    return Response(status_code=499)
        except CapacityRefusal as refusal:
            record(refusal.outcome)
            if vertex and refusal.code == 503:  # Vertex sheds with its dynamic-shared-quota 429
                raise ApiError(429, "RESOURCE_EXHAUSTED", CAPACITY_MESSAGE, outcome=refusal.outcome) from None
            raise ApiError(refusal.code, refusal.status, refusal.message, outcome=refusal.outcome) from None

        kind = fault.kind if fault is not None else None
        record("ok" if kind in (None, "slow", "blocked") else f"fault:{kind}", answer)
        if not stream:
            await resources.aclose()
            if kind == "non_json":
                return Response(
                    "<html><body><h1>502 Bad Gateway</h1></body></html>",
                    status_code=fault.status_code,
                    media_type="text/html",
                )
            body = _response_body(
                parsed,
                model,
                tier,
                response_id,
                text=answer.text,
                answer=answer,
                finish=answer.finish_reason,
                vertex=vertex,
            )
            if kind == "drop":
                return _DroppedResponse(json.dumps(body), media_type="application/json", headers=headers)
            return JSONResponse(body, headers=headers)

        chunks = [""] if answer.blocked else lm.split_into_chunks(answer.text, config.stream_chunk_tokens)
        stop_after = fault.after_chunks if kind in ("drop", "stream_cut") else None

        async def events() -> AsyncIterator[str]:
            for index, chunk in enumerate(chunks):
                if stop_after is not None and index >= stop_after:
                    if kind == "drop":
                        raise ConnectionDropped("fault injected: stream dropped")
                    return  # stream_cut: a quiet end with no finishReason
                await asyncio.sleep(service_s / len(chunks))
                last = index == len(chunks) - 1
                yield _sse(
                    _response_body(
                        parsed,
                        model,
                        tier,
                        response_id,
                        text=chunk,
                        answer=answer if last else None,
                        finish=answer.finish_reason if last else None,
                        vertex=vertex,
                    )
                )

        return _HeldSlotStreamingResponse(events(), resources=resources, headers=headers)

    async def count_tokens(request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object.")
        inner = _pick(body, "generateContentRequest", "generate_content_request")
        source = inner if isinstance(inner, dict) else body
        contents = _validate_contents(source.get("contents"))
        total = lm.prompt_tokens(contents, _pick(source, "systemInstruction", "system_instruction"), part_tokens)
        return JSONResponse({"totalTokens": total, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]})

    def api_endpoint(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """Answer every failure in Gemini's error format, never with a traceback."""

        async def endpoint(request: Request) -> Response:
            async with state.stats.tracking_in_flight():
                try:
                    return await handler(request)
                except ApiError as error:
                    return error.response()
                except Exception:
                    log.exception("emulator error on %s", request.url.path)
                    return ApiError(500, "INTERNAL", "Internal error in the emulator.").response()

        return endpoint

    @api_endpoint
    async def model_action(request: Request) -> Response:
        key = authenticate(request)
        rest = request.path_params["rest"]
        version = request.path_params["version"]
        if request.method == "GET" and ":" not in rest:
            return JSONResponse(_model_resource(known_model(version, rest, "get"), config))
        name, _, action = rest.rpartition(":")
        if not name or request.method != "POST":
            raise ApiError(404, "NOT_FOUND", f"Method not found: {request.url.path}")
        if action not in ("generateContent", "streamGenerateContent", "countTokens", "batchGenerateContent"):
            raise ApiError(404, "NOT_FOUND", f"Method not found: {action}")
        model_id = known_model(version, name, action)
        if action == "batchGenerateContent":
            if model_id not in config.batch_model_ids:
                raise ApiError(
                    404,
                    "NOT_FOUND",
                    f"models/{model_id} is not found for API version {version}, or is not supported for "
                    "batchGenerateContent. Call ListModels to see the list of available models and their "
                    "supported methods.",
                )
            return await batch.create(request, model_id)
        if action == "countTokens":
            return await count_tokens(request)
        return await generate(request, model_id, key, stream=action == "streamGenerateContent")

    @api_endpoint
    async def list_models(request: Request) -> Response:
        authenticate(request)
        known_model(request.path_params["version"], config.models[0], "list")
        try:
            size = max(1, min(1000, int(request.query_params.get("pageSize", 50))))
            start = int(request.query_params.get("pageToken") or 0)
        except ValueError:
            raise ApiError(400, "INVALID_ARGUMENT", "pageSize and pageToken must be integers.") from None
        page = config.models[start : start + size]
        body: dict[str, Any] = {"models": [_model_resource(m, config) for m in page]}
        if start + size < len(config.models):
            body["nextPageToken"] = str(start + size)
        return JSONResponse(body)

    async def admin_stats(request: Request) -> Response:
        return JSONResponse(state.snapshot())

    async def admin_calls(request: Request) -> Response:
        since = int(request.query_params.get("since", 0))
        return JSONResponse({"calls": [c for c in state.stats.call_log if c["seq"] > since]})

    async def admin_faults(request: Request) -> Response:
        if request.method == "DELETE":
            state.faults.clear()
        elif request.method == "POST":
            try:
                body = json.loads(await request.body() or b"null")
                specs = body if isinstance(body, list) else [body]
                faults = [parse_fault(spec) for spec in specs]
            except (json.JSONDecodeError, FaultSpecError) as exc:
                return ApiError(400, "INVALID_ARGUMENT", f"bad fault: {exc}").response()
            for fault in faults:
                state.faults.add(fault)
        return JSONResponse({"faults": state.faults.pending()})

    async def admin_reset(request: Request) -> Response:
        state.reset()
        return JSONResponse(state.snapshot())

    async def admin_end_day(request: Request) -> Response:
        state.quotas.end_day()
        return JSONResponse({"day": state.quotas.day_id(state.quotas.clock())})

    async def admin_health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "config": asdict(config)})

    async def not_found(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 404
        status = {404: "NOT_FOUND", 405: "INVALID_ARGUMENT"}.get(code, "INVALID_ARGUMENT")
        return ApiError(code, status, f"{request.method} {request.url.path} is not a Gemini API method.").response()

    @api_endpoint
    async def vertex_action(request: Request) -> Response:
        params = request.path_params
        if params["version"] not in VERTEX_API_VERSIONS:
            raise ApiError(404, "NOT_FOUND", f"API version {params['version']!r} is not served by this emulator.")
        name, _, action = params["rest"].rpartition(":")
        if action not in ("generateContent", "streamGenerateContent", "countTokens"):
            raise ApiError(404, "NOT_FOUND", f"Method not found: {action}")
        if name not in config.models:
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Publisher Model `projects/{params['project']}/locations/{params['location']}/publishers/google/"
                f"models/{name}` was not found or your project does not have access to it.",
            )
        try:
            token = state.tokens.check(
                request.headers.get("authorization"),
                project=params["project"],
                location=params["location"],
                model=name,
            )
        except VertexError as refusal:
            raise ApiError(refusal.code, refusal.status, refusal.message, details=refusal.details) from None
        if action == "countTokens":
            return await count_tokens(request)
        return await generate(
            request,
            name,
            f"vertex:{token.project}",
            stream=action == "streamGenerateContent",
            vertex_location=params["location"],
        )

    @api_endpoint
    async def files_start(request: Request) -> Response:
        authenticate(request)
        if request.headers.get("x-goog-upload-command", "").strip().lower() != "start":
            raise ApiError(400, "INVALID_ARGUMENT", "Only resumable uploads are served: X-Goog-Upload-Command: start.")
        body = await read_json(request) or {}
        file = body.get("file", {}) if isinstance(body, dict) else {}
        try:
            size = int(request.headers.get("x-goog-upload-header-content-length") or file.get("sizeBytes") or 0)
        except ValueError:
            raise ApiError(400, "INVALID_ARGUMENT", "Invalid upload size.") from None
        mime = request.headers.get("x-goog-upload-header-content-type") or file.get("mimeType")
        if not mime:
            raise ApiError(400, "INVALID_ARGUMENT", "The file's MIME type is required.")
        token = state.files.start(mime, file.get("displayName"), size)
        upload_url = f"{str(request.base_url).rstrip('/')}/__upload__/{token}"
        return JSONResponse({}, headers={"x-goog-upload-url": upload_url, "x-goog-upload-status": "active"})

    async def files_upload(request: Request) -> Response:
        command = request.headers.get("x-goog-upload-command", "").lower()
        try:
            stored = state.files.append(
                request.path_params["token"],
                int(request.headers.get("x-goog-upload-offset", "0")),
                await request.body(),
                finalize="finalize" in command,
            )
        except (KeyError, ValueError) as exc:
            return ApiError(400, "INVALID_ARGUMENT", f"Upload refused: {exc}").response()
        if not stored.complete:
            return Response(status_code=200, headers={"x-goog-upload-status": "active"})
        version = "v1beta"
        return JSONResponse(
            {"file": stored.resource(str(request.base_url), version)}, headers={"x-goog-upload-status": "final"}
        )

    @api_endpoint
    async def file_resource(request: Request) -> Response:
        authenticate(request)
        file_id, _, action = request.path_params["file_id"].partition(":")
        if action == "download" and request.method == "GET":
            stored = state.files.get(file_id)
            if stored is None or not stored.generated:
                raise ApiError(404, "NOT_FOUND", f"File {file_id} has nothing to download (only generated files do).")
            return Response(bytes(stored.data), media_type=stored.mime_type)
        if request.method == "DELETE":
            if not state.files.delete(file_id):
                raise ApiError(404, "NOT_FOUND", f"File {file_id} not found.")
            return JSONResponse({})
        stored = state.files.get(file_id)
        if stored is None:
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                f"You do not have permission to access the File {file_id} or it may not exist.",
            )
        return JSONResponse(stored.resource(str(request.base_url), request.path_params["version"]))

    async def admin_files(request: Request) -> Response:
        return JSONResponse(
            {
                "files": sorted(state.files.files),
                "uploads_under_way": len(state.files.uploads),
                "deleted": state.files.deleted,
            }
        )

    async def oauth_token(request: Request) -> Response:
        form = {key: value[-1] for key, value in parse_qs((await request.body()).decode()).items()}
        try:
            return JSONResponse(state.tokens.grant(form, str(request.url)))
        except ValueError as exc:
            error, _, description = str(exc).partition(": ")
            return JSONResponse({"error": error, "error_description": description}, status_code=400)

    async def admin_expire_tokens(request: Request) -> Response:
        state.tokens.expire_all()
        return JSONResponse({"tokens": len(state.tokens.tokens), "issued": state.tokens.issued})

    async def admin_tokens(request: Request) -> Response:
        return JSONResponse({"tokens": len(state.tokens.tokens), "issued": state.tokens.issued})

    routes = [
        Route(
            "/{version}/projects/{project}/locations/{location}/publishers/google/models/{rest:path}",
            vertex_action,
            methods=["POST"],
        ),
        Route("/token", oauth_token, methods=["POST"]),
        Route("/upload/{version}/files", files_start, methods=["POST"]),
        Route("/__upload__/{token}", files_upload, methods=["POST", "PUT"]),
        Route("/{version}/files/{file_id}", file_resource, methods=["GET", "DELETE"]),
        Route(f"{ADMIN_PREFIX}/files", admin_files, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/oauth/tokens", admin_tokens, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/oauth/expire", admin_expire_tokens, methods=["POST"]),
        Route(f"{ADMIN_PREFIX}/batches", api_endpoint(batch.admin_batches), methods=["GET", "POST"]),
        Route(f"{ADMIN_PREFIX}/batches/{{batch_id}}/end", api_endpoint(batch.admin_end_batch), methods=["POST"]),
        Route("/{version}/batches", api_endpoint(batch.batches), methods=["GET"]),
        Route("/{version}/batches/{rest}", api_endpoint(batch.batch), methods=["GET", "POST", "DELETE"]),
        Route("/{version}/models", list_models, methods=["GET"]),
        Route("/{version}/models/{rest:path}", model_action, methods=["GET", "POST"]),
        Route(f"{ADMIN_PREFIX}/health", admin_health, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/stats", admin_stats, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/calls", admin_calls, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/faults", admin_faults, methods=["GET", "POST", "DELETE"]),
        Route(f"{ADMIN_PREFIX}/reset", admin_reset, methods=["POST"]),
        Route(f"{ADMIN_PREFIX}/quota/end-day", admin_end_day, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found})
    app.state.emulator = state
    return app
