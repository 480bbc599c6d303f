"""The Gemini API's explicit caches (``cachedContents``), as the caching page and the SDK describe them.

A cache holds a model's system instruction and leading contents (tools too) for a TTL (default one hour)
or until an expiry time. A generate request names it with ``cachedContent`` and sends only the rest of
its prompt; the cache's tokens are a part of ``promptTokenCount`` and show as ``cachedContentTokenCount``,
billed at the cached-input price, and the cache's storage is billed per token-hour it is kept.
Documented refusals: a cache under the model's minimum (1,024 tokens for Flash, 4,096 for Pro) is a
400; a request naming a cache may not also set ``systemInstruction``, ``tools`` or ``toolConfig``, nor
name another model (400); a cache deleted or expired is gone (404).
(ai.google.dev/gemini-api/docs/caching; python-genai ``caches.py`` for the wire shapes.)
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_provider_flex.emulator.cache import min_prefix_tokens
from airflow_provider_flex.emulator.errors import ApiError

DEFAULT_TTL_S = 3600.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
#: Fields of a generate request that belong to the cache it names.
FIELDS_OF_THE_CACHE = ("systemInstruction", "system_instruction", "tools", "toolConfig", "tool_config")


def timestamp(seconds: float) -> str:
    """Return an RFC 3339 UTC timestamp, as the API writes them."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def parse_ttl(value: Any) -> float:
    """Return seconds from a protobuf Duration string (``"3600s"``); ApiError 400 otherwise."""
    match = _DURATION.match(str(value)) if isinstance(value, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise ApiError(400, "INVALID_ARGUMENT", f"Invalid value at 'cached_content.ttl' ({value!r}): a duration "
                       "such as \"3600s\" is required.")  # fmt: skip
    return float(match.group(1))


def parse_expire_time(value: Any) -> float:
    """Return epoch seconds from an RFC 3339 timestamp; ApiError 400 otherwise."""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ApiError(400, "INVALID_ARGUMENT", f"Invalid value at 'cached_content.expire_time' ({value!r})") from None


def expiry(body: Mapping[str, Any], now: float, *, default_ttl_s: float | None) -> float | None:
    """Return the expiry a create or update body asks for (``ttl`` or ``expireTime``, not both)."""
    ttl, expire = body.get("ttl"), body.get("expireTime", body.get("expire_time"))
    if ttl is not None and expire is not None:
        raise ApiError(400, "INVALID_ARGUMENT", "Only one of ttl and expire_time may be set.")
    if ttl is not None:
        return now + parse_ttl(ttl)
    if expire is not None:
        return parse_expire_time(expire)
    return None if default_ttl_s is None else now + default_ttl_s


@dataclass
class CachedEntry:
    """One cache: what it holds, whose it is, and when it was made, changed and ends."""

    name: str
    owner: str
    model: str
    display_name: str
    contents: list[Any]
    system_instruction: Any
    tokens: int
    create_time: float
    update_time: float
    expire_time: float
    deleted_at: float | None = None

    def ended_at(self, now: float) -> float | None:
        """Return when the cache stopped existing (deleted or expired), or None while it lives."""
        ends = [t for t in (self.deleted_at, self.expire_time) if t is not None and t <= now]
        return min(ends) if ends else None

    def stored_token_hours(self, now: float) -> float:
        """Return the token-hours of storage so far: tokens times hours from creation to its end (or now)."""
        end = self.ended_at(now) or now
        return self.tokens * max(0.0, end - self.create_time) / 3600.0

    def resource(self) -> dict[str, Any]:
        """Return the ``CachedContent`` resource (its contents are never returned, as the API does)."""
        return {
            "name": self.name,
            "displayName": self.display_name,
            "model": f"models/{self.model}",
            "createTime": timestamp(self.create_time),
            "updateTime": timestamp(self.update_time),
            "expireTime": timestamp(self.expire_time),
            "usageMetadata": {"totalTokenCount": self.tokens},
        }


@dataclass
class CachedContents:
    """Every cache of one emulator instance (kept after deletion, so storage stays counted)."""

    count_tokens: Callable[[Any, Any], int]
    #: Models that refuse ``createCachedContent`` (as a model without caching answers).
    no_caching: frozenset[str] = frozenset()
    clock: Callable[[], float] = time.time
    entries: dict[str, CachedEntry] = field(default_factory=dict)

    def create(self, owner: str, body: Any) -> CachedEntry:
        """Return a new cache from a ``POST /cachedContents`` body; ApiError for the documented refusals."""
        if not isinstance(body, Mapping):
            raise ApiError(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object.")
        model = str(body.get("model") or "").removeprefix("models/")
        if not model:
            raise ApiError(400, "INVALID_ARGUMENT", "* CachedContent.model: model is required.")
        if model in self.no_caching:
            raise ApiError(400, "INVALID_ARGUMENT", f"Model models/{model} does not support cached content.")
        contents = body.get("contents") or []
        instruction = body.get("systemInstruction", body.get("system_instruction"))
        if not isinstance(contents, list):
            raise ApiError(400, "INVALID_ARGUMENT", "* CachedContent.contents: a list of contents is required.")
        tokens = self.count_tokens(contents, instruction)
        minimum = min_prefix_tokens(model)
        if tokens < minimum:
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"Cached content is too small. total_token_count={tokens}, min_total_token_count={minimum}",
            )
        now = self.clock()
        expires = expiry(body, now, default_ttl_s=DEFAULT_TTL_S)
        assert expires is not None
        entry = CachedEntry(
            name=f"cachedContents/{uuid.uuid4().hex[:16]}",
            owner=owner,
            model=model,
            display_name=str(body.get("displayName", body.get("display_name")) or ""),
            contents=contents,
            system_instruction=instruction,
            tokens=tokens,
            create_time=now,
            update_time=now,
            expire_time=expires,
        )
        self.entries[entry.name] = entry
        return entry

    def get(self, owner: str, name: str) -> CachedEntry:
        """Return the live cache ``name`` of ``owner``; 404 when it never was, was deleted or expired."""
        name = name if name.startswith("cachedContents/") else f"cachedContents/{name}"
        entry = self.entries.get(name)
        if entry is None or entry.owner != owner or entry.ended_at(self.clock()) is not None:
            raise ApiError(403 if entry is None else 404, "PERMISSION_DENIED" if entry is None else "NOT_FOUND",
                           f"CachedContent not found (or permission denied): {name}")  # fmt: skip
        return entry

    def live(self, owner: str | None = None) -> list[CachedEntry]:
        """Return the caches alive now (of ``owner``, or all), newest first."""
        now = self.clock()
        found = [e for e in self.entries.values() if e.ended_at(now) is None and owner in (None, e.owner)]
        return sorted(found, key=lambda e: e.create_time, reverse=True)

    def page(self, owner: str, size: int, token: str | None) -> dict[str, Any]:
        """Return one ``GET /cachedContents`` page (``nextPageToken`` while more remain)."""
        start = int(token or 0)
        live = self.live(owner)
        body: dict[str, Any] = {"cachedContents": [e.resource() for e in live[start : start + size]]}
        if start + size < len(live):
            body["nextPageToken"] = str(start + size)
        return body

    def update(self, owner: str, name: str, body: Any) -> CachedEntry:
        """Return the cache with its new TTL or expiry (``PATCH``): only the expiration may change."""
        entry = self.get(owner, name)
        now = self.clock()
        expires = expiry(body if isinstance(body, Mapping) else {}, now, default_ttl_s=None)
        if expires is None:
            raise ApiError(400, "INVALID_ARGUMENT", "Only the expiration (ttl or expire_time) of a cache can change.")
        entry.expire_time, entry.update_time = expires, now
        return entry

    def delete(self, owner: str, name: str) -> None:
        """Delete a live cache (its storage stops counting); 404 when it is already gone."""
        self.get(owner, name).deleted_at = self.clock()

    def for_request(self, owner: str | None, name: str, model: str, body: Mapping[str, Any]) -> CachedEntry:
        """Return the cache a generate request names, after the checks the API makes (400, 404)."""
        clashing = [f for f in FIELDS_OF_THE_CACHE if body.get(f)]
        if clashing:
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                "CachedContent can not be used with GenerateContent request setting system_instruction, tools or "
                "tool_config.\n\nProposed fix: move those values to CachedContent from GenerateContent request.",
            )
        entry = self.get(owner, name) if owner is not None else self._any_owner(name)
        if entry.model != model:
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"Model used by GenerateContent request (models/{model}) and CachedContent (models/{entry.model}) "
                "has to be the same!",
            )
        return entry

    def _any_owner(self, name: str) -> CachedEntry:
        entry = self.entries.get(name)
        if entry is None:
            raise ApiError(404, "NOT_FOUND", f"CachedContent not found (or permission denied): {name}")
        return self.get(entry.owner, name)

    def snapshot(self) -> dict[str, Any]:
        """Return what the admin endpoint reports: caches made and alive, storage per model in token-hours."""
        now = self.clock()
        storage: dict[str, float] = {}
        for entry in self.entries.values():
            storage[entry.model] = storage.get(entry.model, 0.0) + entry.stored_token_hours(now)
        return {
            "created": len(self.entries),
            "alive": len(self.live()),
            "storage_token_hours": storage,
            "caches": [
                {**e.resource(), "alive": e.ended_at(now) is None, "storedTokenHours": e.stored_token_hours(now)}
                for e in self.entries.values()
            ],
        }


def with_cache(body: Mapping[str, Any], entry: CachedEntry) -> dict[str, Any]:
    """Return a generate body as the model sees it: the cache's instruction and contents before the request's."""
    merged = {k: v for k, v in body.items() if k not in ("cachedContent", "cached_content")}
    request_contents = merged.get("contents")
    if isinstance(request_contents, dict):
        request_contents = [request_contents]
    merged["contents"] = [*entry.contents, *(request_contents or [])]
    if entry.system_instruction is not None:
        merged["systemInstruction"] = entry.system_instruction
    return merged


def cache_name(body: Any) -> str | None:
    """Return the cache a generate body names, or None."""
    if not isinstance(body, Mapping):
        return None
    name = body.get("cachedContent", body.get("cached_content"))
    return str(name) if name else None
