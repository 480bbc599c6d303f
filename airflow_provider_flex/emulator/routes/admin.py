"""Test controls under ``/__emulator__``: stats, the call log, faults, reset, the quota day, files, tokens."""

from __future__ import annotations

import json
from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from airflow_provider_flex.emulator.errors import ApiError
from airflow_provider_flex.emulator.faults import (
    FaultSpecError,
    parse_fault,
)
from airflow_provider_flex.emulator.state import EmulatorState


class AdminApi:
    """The emulator's own controls over one state (a prefix no Gemini path can take)."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self.state.snapshot())

    async def calls(self, request: Request) -> Response:
        since = int(request.query_params.get("since", 0))
        return JSONResponse({"calls": [c for c in self.state.stats.call_log if c["seq"] > since]})

    async def faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.state.faults.clear()
        elif request.method == "POST":
            try:
                body = json.loads(await request.body() or b"null")
                specs = body if isinstance(body, list) else [body]
                faults = [parse_fault(spec) for spec in specs]
            except (json.JSONDecodeError, FaultSpecError) as exc:
                return ApiError(400, "INVALID_ARGUMENT", f"bad fault: {exc}").response()
            for fault in faults:
                self.state.faults.add(fault)
        return JSONResponse({"faults": self.state.faults.pending()})

    async def reset(self, request: Request) -> Response:
        self.state.reset()
        return JSONResponse(self.state.snapshot())

    async def end_day(self, request: Request) -> Response:
        self.state.quotas.end_day()
        return JSONResponse({"day": self.state.quotas.day_id(self.state.quotas.clock())})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "self.state.config": asdict(self.state.config)})

    async def files(self, request: Request) -> Response:
        return JSONResponse(
            {
                "files": sorted(self.state.files.files),
                "uploads_under_way": len(self.state.files.uploads),
                "deleted": self.state.files.deleted,
            }
        )

    async def expire_tokens(self, request: Request) -> Response:
        self.state.tokens.expire_all()
        return JSONResponse({"tokens": len(self.state.tokens.tokens), "issued": self.state.tokens.issued})

    async def tokens(self, request: Request) -> Response:
        return JSONResponse({"tokens": len(self.state.tokens.tokens), "issued": self.state.tokens.issued})
