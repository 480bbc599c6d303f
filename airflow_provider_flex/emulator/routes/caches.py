"""The emulator's ``cachedContents`` routes (create, list, get, update the TTL, delete), as the SDK drives them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from airflow_provider_flex.emulator.cached_contents import CachedContents
from airflow_provider_flex.emulator.routes import page_params


class CachesApi:
    """HTTP handlers over the state's :class:`CachedContents` (read at each call: a reset makes a new one)."""

    def __init__(
        self,
        caches: Callable[[], CachedContents],
        *,
        authenticate: Callable[[Request], str],
        read_json: Callable[[Request], Awaitable[Any]],
        known_model: Callable[[str, str, str], str],
    ) -> None:
        self.caches = caches
        self.authenticate = authenticate
        self.read_json = read_json
        self.known_model = known_model

    async def collection(self, request: Request) -> Response:
        """``POST /{v}/cachedContents`` (create) and ``GET /{v}/cachedContents`` (list, newest first)."""
        key = self.authenticate(request)
        if request.method == "POST":
            body = await self.read_json(request)
            if isinstance(body, dict) and body.get("model"):
                self.known_model(request.path_params["version"], str(body["model"]), "createCachedContent")
            return JSONResponse(self.caches().create(key, body).resource())
        size, token = page_params(request)
        return JSONResponse(self.caches().page(key, size, token))

    async def resource(self, request: Request) -> Response:
        """``GET``, ``PATCH`` (ttl or expireTime) and ``DELETE /{v}/cachedContents/{id}``."""
        key = self.authenticate(request)
        name = f"cachedContents/{request.path_params['cache_id']}"
        caches = self.caches()
        if request.method == "DELETE":
            caches.delete(key, name)
            return JSONResponse({})
        if request.method == "PATCH":
            return JSONResponse(caches.update(key, name, await self.read_json(request)).resource())
        return JSONResponse(caches.get(key, name).resource())

    async def admin_caches(self, request: Request) -> Response:
        """``GET /__emulator__/caches``: every cache made since the reset, alive or not, and storage per model."""
        return JSONResponse(self.caches().snapshot())
