"""The Files API's routes: resumable uploads, get, delete, and downloads of generated files."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from airflow_provider_flex.emulator.errors import ApiError
from airflow_provider_flex.emulator.routes.gemini import GeminiApi


class FilesApi:
    """Uploads and files, authenticated as :class:`GeminiApi` authenticates."""

    def __init__(self, gemini: GeminiApi) -> None:
        self.gemini = gemini

    async def files_start(self, request: Request) -> Response:
        self.gemini.authenticate(request)
        if request.headers.get("x-goog-upload-command", "").strip().lower() != "start":
            raise ApiError(400, "INVALID_ARGUMENT", "Only resumable uploads are served: X-Goog-Upload-Command: start.")
        body = await self.gemini.read_json(request) or {}
        file = body.get("file", {}) if isinstance(body, dict) else {}
        try:
            size = int(request.headers.get("x-goog-upload-header-content-length") or file.get("sizeBytes") or 0)
        except ValueError:
            raise ApiError(400, "INVALID_ARGUMENT", "Invalid upload size.") from None
        mime = request.headers.get("x-goog-upload-header-content-type") or file.get("mimeType")
        if not mime:
            raise ApiError(400, "INVALID_ARGUMENT", "The file's MIME type is required.")
        token = self.gemini.state.files.start(mime, file.get("displayName"), size)
        upload_url = f"{str(request.base_url).rstrip('/')}/__upload__/{token}"
        return JSONResponse({}, headers={"x-goog-upload-url": upload_url, "x-goog-upload-status": "active"})

    async def files_upload(self, request: Request) -> Response:
        command = request.headers.get("x-goog-upload-command", "").lower()
        try:
            stored = self.gemini.state.files.append(
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

    async def file_resource(self, request: Request) -> Response:
        self.gemini.authenticate(request)
        file_id, _, action = request.path_params["file_id"].partition(":")
        if action == "download" and request.method == "GET":
            stored = self.gemini.state.files.get(file_id)
            if stored is None or not stored.generated:
                raise ApiError(404, "NOT_FOUND", f"File {file_id} has nothing to download (only generated files do).")
            return Response(bytes(stored.data), media_type=stored.mime_type)
        if request.method == "DELETE":
            if not self.gemini.state.files.delete(file_id):
                raise ApiError(404, "NOT_FOUND", f"File {file_id} not found.")
            return JSONResponse({})
        stored = self.gemini.state.files.get(file_id)
        if stored is None:
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                f"You do not have permission to access the File {file_id} or it may not exist.",
            )
        return JSONResponse(stored.resource(str(request.base_url), request.path_params["version"]))
