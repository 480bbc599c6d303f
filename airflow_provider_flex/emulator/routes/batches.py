"""The emulator's Batch API routes: create, list, get, cancel and delete jobs, and the admin calls that end them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from airflow_provider_flex.emulator.batch import FORCED_STATES, NEXT_FATES, BatchJobs
from airflow_provider_flex.emulator.errors import ApiError
from airflow_provider_flex.emulator.routes import page_params


class BatchEndpoints:
    """The HTTP handlers of the Batch API and its admin controls, over one :class:`BatchJobs`.

    ``authenticate`` answers the request's API key (or raises ApiError); ``read_json`` its body.
    Handlers raise ApiError; the app's endpoint wrapper answers it in the API's error format.
    """

    def __init__(
        self,
        jobs: Callable[[], BatchJobs],
        *,
        authenticate: Callable[[Request], str],
        read_json: Callable[[Request], Awaitable[Any]],
    ) -> None:
        self.jobs = jobs
        self.authenticate = authenticate
        self.read_json = read_json

    async def create(self, request: Request, model: str) -> Response:
        """``POST /{v}/models/{model}:batchGenerateContent`` (the caller checked the model takes batches)."""
        key = self.authenticate(request)
        job = self.jobs().create(key, model, await self.read_json(request))
        return JSONResponse(job.resource())

    async def batches(self, request: Request) -> Response:
        """``GET /{v}/batches``: the project's jobs, newest first."""
        key = self.authenticate(request)
        size, token = page_params(request)
        return JSONResponse(self.jobs().list(key, size, token))

    async def batch(self, request: Request) -> Response:
        """``GET|DELETE /{v}/batches/{id}`` and ``POST /{v}/batches/{id}:cancel``."""
        key = self.authenticate(request)
        batch_id, _, action = request.path_params["rest"].partition(":")
        name = f"batches/{batch_id}"
        jobs = self.jobs()
        if request.method == "DELETE" and not action:
            jobs.delete(key, name)
            return JSONResponse({})
        if request.method == "POST" and action == "cancel":
            jobs.cancel(key, name)
            return JSONResponse({})
        if request.method == "GET" and not action:
            return JSONResponse(jobs.get(key, name).resource())
        raise ApiError(404, "NOT_FOUND", f"Method not found: {request.method} {request.url.path}")

    async def admin_batches(self, request: Request) -> Response:
        """``GET /__emulator__/batches``: every job with its keys; ``POST`` with ``{"state", "count"}``:
        the next ``count`` jobs end in ``state`` (FAILED, CANCELLED, EXPIRED) instead of succeeding, or never end
        until cancelled (STUCK)."""
        jobs = self.jobs()
        if request.method == "POST":
            body = await self.read_json(request) or {}
            state = str(body.get("state", "")).upper()
            if state not in NEXT_FATES:
                raise ApiError(400, "INVALID_ARGUMENT", f"state must be one of {', '.join(NEXT_FATES)}")
            jobs.next_fates.extend([NEXT_FATES[state]] * int(body.get("count", 1)))
        return JSONResponse(jobs.snapshot())

    async def admin_end_batch(self, request: Request) -> Response:
        """``POST /__emulator__/batches/{id}/end`` with ``{"state"}``: end that job now."""
        body = await self.read_json(request) or {}
        state = str(body.get("state", "")).upper()
        if state not in FORCED_STATES:
            raise ApiError(400, "INVALID_ARGUMENT", f"state must be one of {', '.join(FORCED_STATES)}")
        return JSONResponse(self.jobs().force(request.path_params["batch_id"], state).resource())
