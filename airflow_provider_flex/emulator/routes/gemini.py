"""The Gemini API's own routes over one emulator state: models, generate, stream, countTokens, batch creation.

Handlers are methods, so a test can build a :class:`GeminiApi` over an :class:`EmulatorState` and call
them alone; ``app.create_app`` mounts them (with the error wrapper) on their paths.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from airflow_provider_flex.emulator import model as lm
from airflow_provider_flex.emulator.answers import (
    Answer,
    ConnectionDropped,
    DroppedResponse,
    HeldSlotStreamingResponse,
    cancelled_on_disconnect,
    compose_answer,
    model_resource,
    quota_error,
    response_body,
    retry_info,
    sse,
)
from airflow_provider_flex.emulator.cached_contents import CachedEntry, cache_name
from airflow_provider_flex.emulator.capacity import CapacityRefusal, flex_queue_wait
from airflow_provider_flex.emulator.config import (
    DEFAULT_SERVER_TIMEOUT_S,
)
from airflow_provider_flex.emulator.errors import ApiError
from airflow_provider_flex.emulator.faults import (
    API_STATUS_BY_CODE,
    ERROR_FAULTS,
    Fault,
)
from airflow_provider_flex.emulator.quotas import QuotaExceeded
from airflow_provider_flex.emulator.requests import (
    SERVICE_TIER_HEADER,
    GenerateRequest,
    pick,
    validate_contents,
)
from airflow_provider_flex.emulator.routes import page_params
from airflow_provider_flex.emulator.routes.batches import BatchEndpoints
from airflow_provider_flex.emulator.state import EmulatorState
from airflow_provider_flex.emulator.vertex import (
    CAPACITY_MESSAGE,
    VertexError,
    vertex_tier,
)
from airflow_provider_flex.pricing import MODEL_ALIASES

API_VERSIONS = ("v1", "v1beta")


class GeminiApi:
    """Generate and stream calls with the flex tier's capacity, quotas and faults; the models; countTokens."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.config = state.config
        self.batch = BatchEndpoints(lambda: state.batches, authenticate=self.authenticate, read_json=self.read_json)

    def authenticate(self, request: Request) -> str:
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not key:
            raise ApiError(
                401,
                "UNAUTHENTICATED",
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        if self.config.api_key is not None and key != self.config.api_key:
            raise ApiError(403, "PERMISSION_DENIED", "API key not valid. Please pass a valid API key.")
        return key

    def known_model(self, version: str, model: str, method: str) -> str:
        if version not in API_VERSIONS:
            raise ApiError(404, "NOT_FOUND", f"API version {version!r} is not served by this emulator.")
        model_id = model.removeprefix("models/")
        model_id = MODEL_ALIASES.get(model_id, model_id)  # an alias answers as its target (``modelVersion``)
        if model_id not in self.config.models:
            raise ApiError(
                404,
                "NOT_FOUND",
                f"models/{model_id} is not found for API version {version}, or is not supported for {method}. "
                "Call ListModels to see the list of available models and their supported methods.",
            )
        return model_id

    async def read_json(self, request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}") from None

    def server_timeout(self, request: Request) -> float:
        try:
            return max(0.0, float(request.headers.get("x-server-timeout", DEFAULT_SERVER_TIMEOUT_S)))
        except ValueError:
            return DEFAULT_SERVER_TIMEOUT_S

    def admit(self, request: GenerateRequest, model: str, key: str) -> None:
        try:
            self.state.quotas.admit(key, model, request.prompt_tokens)
        except QuotaExceeded as exceeded:
            raise quota_error(exceeded, self.config.quota_details) from None

    def fault_error(self, fault: Fault) -> ApiError:
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
        self, request: Request, model: str, key: str, *, stream: bool, vertex_location: str | None = None
    ) -> Response:
        """Answer one generate call; on Vertex routes (``vertex_location``) the tier comes from the headers."""
        method = "stream" if stream else "generate"
        vertex = vertex_location is not None
        body_json = await self.read_json(request)
        if vertex:
            try:
                tier = vertex_tier(request.headers, vertex_location, body_json)
            except VertexError as refusal:
                raise ApiError(refusal.code, refusal.status, refusal.message, details=refusal.details) from None
        if vertex and cache_name(body_json) is not None:
            raise ApiError(400, "INVALID_ARGUMENT", "This emulator serves cachedContents on the Gemini API only.")
        parsed, cache = self.state.parse_request(body_json, model, key)
        tier = tier if vertex else parsed.tier

        def record(outcome: str, answer: Answer | None = None) -> None:
            self.state.stats.record(
                model=model,
                tier=tier,
                method=method,
                outcome=outcome,
                prompt=parsed.prompt,
                prompt_tokens=parsed.prompt_tokens,
                answer=answer,
                parts=parsed.parts,
            )

        try:
            fault, answer = self._admit_and_answer(parsed, model, key, method=method, vertex=vertex, cache=cache)
        except ApiError as error:
            record(error.outcome)
            raise
        preempt = tier == "flex" and self.config.preempt_rate > 0 and self.state.rng.random() < self.config.preempt_rate
        service_s = self.state.rng.uniform(*self.config.service_time)
        resources = AsyncExitStack()
        extra_delay = fault.delay_s if fault is not None and fault.kind == "slow" else 0.0
        seconds = extra_delay + (0.0 if stream else service_s)
        if not await self._serve(request, tier, resources, seconds, preempt=preempt, vertex=vertex, record=record):
            return Response(status_code=499)
        kind = fault.kind if fault is not None else None
        record("ok" if kind in (None, "slow", "blocked") else f"fault:{kind}", answer)
        shape = _AnswerShape(parsed, model, tier, uuid.uuid4().hex[:22], answer, vertex)
        headers = {} if vertex else {SERVICE_TIER_HEADER: tier}
        if not stream:
            await resources.aclose()
            return _unary_response(shape, fault, headers)
        return _stream_response(shape, fault, service_s, resources, headers, self.config.stream_chunk_tokens)

    def _admit_and_answer(
        self, parsed: Any, model: str, key: str, *, method: str, vertex: bool, cache: CachedEntry | None = None
    ) -> tuple[Any, Answer]:
        """Return the fault drawn for this call and its answer, once the call is admitted; raise ApiError if not.

        The tokens of the explicit cache the request names are its cached tokens; else the implicit cache's.
        """
        if parsed.prompt_tokens > self.config.input_token_limit:
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"The input token count ({parsed.prompt_tokens}) exceeds the maximum number of tokens allowed "
                f"({self.config.input_token_limit}).",
            )
        fault = self.state.faults.take(method)
        if fault is not None and (fault.kind in ERROR_FAULTS or fault.kind == "http_error"):
            raise self.fault_error(fault)
        if not vertex:  # Vertex AI meters flex by its dynamic shared quota, not per-project quotas
            self.admit(parsed, model, key)
        blocked = fault is not None and fault.kind == "blocked"
        answer = compose_answer(parsed, self.config, blocked=blocked, model=model)
        if cache is not None:
            cached = cache.tokens
        else:
            cached = self.state.implicit_cache.cached_tokens(
                key, model, parsed.prompt, parsed.prompt_tokens, time.monotonic()
            )
        return fault, replace(answer, cached_tokens=cached) if cached else answer

    async def _serve(
        self,
        request: Request,
        tier: str,
        resources: AsyncExitStack,
        seconds: float,
        *,
        preempt: bool,
        vertex: bool,
        record: Callable[[str], None],
    ) -> bool:
        """Wait in the flex queue, take a capacity slot (held in ``resources``) and serve for ``seconds``.

        Return False when the client went away meanwhile (the call is recorded as cancelled); raise
        ApiError when capacity refuses it (Vertex AI sheds with its dynamic-shared-quota 429).
        """
        try:
            async with cancelled_on_disconnect(request) as watch:
                try:
                    if tier == "flex" and self.config.queue_wait[1] > 0:
                        await flex_queue_wait(
                            self.state.rng.uniform(*self.config.queue_wait), self.server_timeout(request)
                        )
                    await resources.enter_async_context(
                        self.state.capacity.slot(tier, queue_timeout_s=self.server_timeout(request), preempt=preempt)
                    )
                    await asyncio.sleep(seconds)
                except asyncio.CancelledError:
                    await resources.aclose()
                    if not watch["disconnected"]:
                        raise
                    asyncio.current_task().uncancel()  # type: ignore[union-attr]
                    record("cancelled")
                    return False
        except CapacityRefusal as refusal:
            record(refusal.outcome)
            if vertex and refusal.code == 503:
                raise ApiError(429, "RESOURCE_EXHAUSTED", CAPACITY_MESSAGE, outcome=refusal.outcome) from None
            raise ApiError(refusal.code, refusal.status, refusal.message, outcome=refusal.outcome) from None
        return True

    async def count_tokens(self, request: Request) -> Response:
        body = await self.read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object.")
        inner = pick(body, "generateContentRequest", "generate_content_request")
        source = inner if isinstance(inner, dict) else body
        contents = validate_contents(source.get("contents"))
        total = lm.prompt_tokens(
            contents, pick(source, "systemInstruction", "system_instruction"), self.state.part_tokens
        )
        return JSONResponse({"totalTokens": total, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]})

    async def model_action(self, request: Request) -> Response:
        key = self.authenticate(request)
        rest = request.path_params["rest"]
        version = request.path_params["version"]
        if request.method == "GET" and ":" not in rest:
            return JSONResponse(model_resource(self.known_model(version, rest, "get"), self.config))
        name, _, action = rest.rpartition(":")
        if not name or request.method != "POST":
            raise ApiError(404, "NOT_FOUND", f"Method not found: {request.url.path}")
        if action not in ("generateContent", "streamGenerateContent", "countTokens", "batchGenerateContent"):
            raise ApiError(404, "NOT_FOUND", f"Method not found: {action}")
        model_id = self.known_model(version, name, action)
        if action == "batchGenerateContent":
            if model_id not in self.config.batch_model_ids:
                raise ApiError(
                    404,
                    "NOT_FOUND",
                    f"models/{model_id} is not found for API version {version}, or is not supported for "
                    "batchGenerateContent. Call ListModels to see the list of available models and their "
                    "supported methods.",
                )
            return await self.batch.create(request, model_id)
        if action == "countTokens":
            return await self.count_tokens(request)
        return await self.generate(request, model_id, key, stream=action == "streamGenerateContent")

    async def list_models(self, request: Request) -> Response:
        self.authenticate(request)
        self.known_model(request.path_params["version"], self.config.models[0], "list")
        size, token = page_params(request)
        start = int(token or 0)
        page = self.config.models[start : start + size]
        body: dict[str, Any] = {"models": [model_resource(m, self.config) for m in page]}
        if start + size < len(self.config.models):
            body["nextPageToken"] = str(start + size)
        return JSONResponse(body)


@dataclass(frozen=True)
class _AnswerShape:
    """What every response body of one call repeats: the request, model, tier, response id, answer, endpoint."""

    parsed: Any
    model: str
    tier: str
    response_id: str
    answer: Answer
    vertex: bool

    def body(self, text: str | None, *, last: bool = True) -> dict[str, Any]:
        """Return a response body (a stream's chunk when ``last`` is False: no usage, no finish reason)."""
        answer = self.answer
        return response_body(
            self.parsed,
            self.model,
            self.tier,
            self.response_id,
            text=text,
            answer=answer if last else None,
            finish=answer.finish_reason if last else None,
            vertex=self.vertex,
        )


def _unary_response(shape: _AnswerShape, fault: Any, headers: dict[str, str]) -> Response:
    """Return a generate call's response: the answer, or the HTML page or dropped body a fault asks for."""
    kind = fault.kind if fault is not None else None
    if kind == "non_json":
        return Response(
            "<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=fault.status_code, media_type="text/html"
        )
    body = shape.body(shape.answer.text)
    if kind == "drop":
        return DroppedResponse(json.dumps(body), media_type="application/json", headers=headers)
    return JSONResponse(body, headers=headers)


def _stream_response(
    shape: _AnswerShape,
    fault: Any,
    service_s: float,
    resources: AsyncExitStack,
    headers: dict[str, str],
    chunk_tokens: int,
) -> Response:
    """Return a streamed answer in chunks over ``service_s`` (cut or dropped where a fault says), holding the slot."""
    answer = shape.answer
    kind = fault.kind if fault is not None else None
    chunks = [""] if answer.blocked else lm.split_into_chunks(answer.text, chunk_tokens)
    stop_after = fault.after_chunks if kind in ("drop", "stream_cut") else None

    async def events() -> AsyncIterator[str]:
        for index, chunk in enumerate(chunks):
            if stop_after is not None and index >= stop_after:
                if kind == "drop":
                    raise ConnectionDropped("fault injected: stream dropped")
                return  # stream_cut: a quiet end with no finishReason
            await asyncio.sleep(service_s / len(chunks))
            yield sse(shape.body(chunk, last=index == len(chunks) - 1))

    return HeldSlotStreamingResponse(events(), resources=resources, headers=headers)
