"""Vertex AI's routes: publisher-model generate, stream and countTokens with OAuth bearer tokens, and the token endpoint."""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from airflow_provider_flex.emulator.errors import ApiError
from airflow_provider_flex.emulator.routes.gemini import GeminiApi
from airflow_provider_flex.emulator.vertex import (
    VERTEX_API_VERSIONS,
    VertexError,
)


class VertexApi:
    """Vertex AI's paths over the same model and capacity as :class:`GeminiApi` (tiers from headers)."""

    def __init__(self, gemini: GeminiApi) -> None:
        self.gemini = gemini

    async def vertex_action(self, request: Request) -> Response:
        params = request.path_params
        if params["version"] not in VERTEX_API_VERSIONS:
            raise ApiError(404, "NOT_FOUND", f"API version {params['version']!r} is not served by this emulator.")
        name, _, action = params["rest"].rpartition(":")
        if action not in ("generateContent", "streamGenerateContent", "countTokens"):
            raise ApiError(404, "NOT_FOUND", f"Method not found: {action}")
        if name not in self.gemini.config.models:
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Publisher Model `projects/{params['project']}/locations/{params['location']}/publishers/google/"
                f"models/{name}` was not found or your project does not have access to it.",
            )
        try:
            token = self.gemini.state.tokens.check(
                request.headers.get("authorization"),
                project=params["project"],
                location=params["location"],
                model=name,
            )
        except VertexError as refusal:
            raise ApiError(refusal.code, refusal.status, refusal.message, details=refusal.details) from None
        if action == "countTokens":
            return await self.gemini.count_tokens(request)
        return await self.gemini.generate(
            request,
            name,
            f"vertex:{token.project}",
            stream=action == "streamGenerateContent",
            vertex_location=params["location"],
        )

    async def oauth_token(self, request: Request) -> Response:
        form = {key: value[-1] for key, value in parse_qs((await request.body()).decode()).items()}
        try:
            return JSONResponse(self.gemini.state.tokens.grant(form, str(request.url)))
        except ValueError as exc:
            error, _, description = str(exc).partition(": ")
            return JSONResponse({"error": error, "error_description": description}, status_code=400)
