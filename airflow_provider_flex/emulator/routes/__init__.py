"""The emulator's routes, one module per API (Gemini, Vertex AI, Files, batches, caches, admin)."""

from __future__ import annotations

from starlette.requests import Request

from airflow_provider_flex.emulator.errors import ApiError


def page_params(request: Request) -> tuple[int, str | None]:
    """Return a list call's ``pageSize`` (1 to 1,000, default 50) and ``pageToken``; 400 when not integers."""
    try:
        size = max(1, min(1000, int(request.query_params.get("pageSize", 50))))
        token = request.query_params.get("pageToken") or None
        int(token or 0)
    except ValueError:
        raise ApiError(400, "INVALID_ARGUMENT", "pageSize and pageToken must be integers.") from None
    return size, token
