"""The emulator's HTTP surface: the Gemini API calls the SDK makes, plus admin endpoints.

API routes live under ``/v1`` and ``/v1beta``; test controls live under
``/__emulator__``, a prefix no Gemini path can take.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from airflow_provider_flex.emulator.answers import (
    DropFaultLogFilter,
)
from airflow_provider_flex.emulator.config import (
    EmulatorConfig,
)
from airflow_provider_flex.emulator.errors import ApiError
from airflow_provider_flex.emulator.routes.admin import AdminApi
from airflow_provider_flex.emulator.routes.caches import CachesApi
from airflow_provider_flex.emulator.routes.files import FilesApi
from airflow_provider_flex.emulator.routes.gemini import GeminiApi
from airflow_provider_flex.emulator.routes.vertex import VertexApi
from airflow_provider_flex.emulator.state import EmulatorState

ADMIN_PREFIX = "/__emulator__"
log = logging.getLogger(__name__)


def api_endpoint(
    state: EmulatorState, handler: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
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


async def not_found(request: Request, exc: Exception) -> Response:
    code = exc.status_code if isinstance(exc, HTTPException) else 404
    status = {404: "NOT_FOUND", 405: "INVALID_ARGUMENT"}.get(code, "INVALID_ARGUMENT")
    return ApiError(code, status, f"{request.method} {request.url.path} is not a Gemini API method.").response()


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    """Return the emulator as an ASGI app; ``app.state.emulator`` holds its state."""
    config = config or EmulatorConfig()
    state = EmulatorState(config)
    logging.getLogger("uvicorn.error").addFilter(DropFaultLogFilter())
    gemini = GeminiApi(state)
    vertex = VertexApi(gemini)
    files = FilesApi(gemini)
    admin = AdminApi(state)
    batch = gemini.batch
    caches = CachesApi(
        lambda: state.cached_contents,
        authenticate=gemini.authenticate,
        read_json=gemini.read_json,
        known_model=gemini.known_model,
    )

    def api(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        return api_endpoint(state, handler)

    routes = [
        Route(
            "/{version}/projects/{project}/locations/{location}/publishers/google/models/{rest:path}",
            api(vertex.vertex_action),
            methods=["POST"],
        ),
        Route("/token", vertex.oauth_token, methods=["POST"]),
        Route("/upload/{version}/files", api(files.files_start), methods=["POST"]),
        Route("/__upload__/{token}", files.files_upload, methods=["POST", "PUT"]),
        Route("/{version}/files/{file_id}", api(files.file_resource), methods=["GET", "DELETE"]),
        Route(f"{ADMIN_PREFIX}/files", admin.files, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/oauth/tokens", admin.tokens, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/oauth/expire", admin.expire_tokens, methods=["POST"]),
        Route(f"{ADMIN_PREFIX}/batches", api(batch.admin_batches), methods=["GET", "POST"]),
        Route(f"{ADMIN_PREFIX}/batches/{{batch_id}}/end", api(batch.admin_end_batch), methods=["POST"]),
        Route("/{version}/batches", api(batch.batches), methods=["GET"]),
        Route("/{version}/batches/{rest}", api(batch.batch), methods=["GET", "POST", "DELETE"]),
        Route("/{version}/cachedContents", api(caches.collection), methods=["GET", "POST"]),
        Route("/{version}/cachedContents/{cache_id}", api(caches.resource), methods=["GET", "PATCH", "DELETE"]),
        Route(f"{ADMIN_PREFIX}/caches", caches.admin_caches, methods=["GET"]),
        Route("/{version}/models", api(gemini.list_models), methods=["GET"]),
        Route("/{version}/models/{rest:path}", api(gemini.model_action), methods=["GET", "POST"]),
        Route(f"{ADMIN_PREFIX}/health", admin.health, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/stats", admin.stats, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/calls", admin.calls, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/faults", admin.faults, methods=["GET", "POST", "DELETE"]),
        Route(f"{ADMIN_PREFIX}/reset", admin.reset, methods=["POST"]),
        Route(f"{ADMIN_PREFIX}/quota/end-day", admin.end_day, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found})
    app.state.emulator = state
    return app
