"""The emulator's HTTP surface: the Gemini API calls the SDK makes, plus admin endpoints.

API routes live under ``/v1`` and ``/v1beta``; test controls live under
``/__emulator__``, a prefix no Gemini path can take.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from airflow_provider_flex.emulator import model as lm
from airflow_provider_flex.emulator.answers import (
    Answer,
    ConnectionDropped,
    DropFaultLogFilter,
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
from airflow_provider_flex.emulator.batch import BatchEndpoints
from airflow_provider_flex.emulator.capacity import CapacityRefusal
from airflow_provider_flex.emulator.config import (
    DEFAULT_SERVER_TIMEOUT_S,
    EmulatorConfig,
)
from airflow_provider_flex.emulator.errors import ApiError
from airflow_provider_flex.emulator.faults import (
    API_STATUS_BY_CODE,
    ERROR_FAULTS,
    Fault,
    FaultSpecError,
    parse_fault,
)
from airflow_provider_flex.emulator.quotas import QuotaExceeded
from airflow_provider_flex.emulator.requests import (
    SERVICE_TIER_HEADER,
    GenerateRequest,
    parse_generate_request,
    pick,
    validate_contents,
)
from airflow_provider_flex.emulator.state import EmulatorState
from airflow_provider_flex.emulator.vertex import (
    CAPACITY_MESSAGE,
    VERTEX_API_VERSIONS,
    VertexError,
    vertex_tier,
)

ADMIN_PREFIX = "/__emulator__"
API_VERSIONS = ("v1", "v1beta")
log = logging.getLogger(__name__)


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    """The emulator as an ASGI app; ``app.state.emulator`` holds its state."""
    config = config or EmulatorConfig()
    state = EmulatorState(config)
    logging.getLogger("uvicorn.error").addFilter(DropFaultLogFilter())

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
            async with cancelled_on_disconnect(request) as watch:
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
            body = response_body(
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
                return DroppedResponse(json.dumps(body), media_type="application/json", headers=headers)
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
                yield sse(
                    response_body(
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

        return HeldSlotStreamingResponse(events(), resources=resources, headers=headers)

    async def count_tokens(request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object.")
        inner = pick(body, "generateContentRequest", "generate_content_request")
        source = inner if isinstance(inner, dict) else body
        contents = validate_contents(source.get("contents"))
        total = lm.prompt_tokens(contents, pick(source, "systemInstruction", "system_instruction"), part_tokens)
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
            return JSONResponse(model_resource(known_model(version, rest, "get"), config))
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
        body: dict[str, Any] = {"models": [model_resource(m, config) for m in page]}
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
