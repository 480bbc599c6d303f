"""Explicit context caches through the hook's client: create, get, list, update the TTL, delete, and their cost.

A cache holds the part of a prompt many calls share (a system instruction, leading contents) for a
TTL; calls that name it (``cached_content``) pay the cached-input price, about a tenth of the input
price, for those tokens, and the cache's storage is billed per token-hour it is kept
(``pricing.cache_storage_cost``). The API refuses a cache under the model's minimum (``prices.json``;
a refusal that states it teaches it to the process) and a model without caching (400): :meth:`FlexCaches.create` raises
:class:`~airflow_provider_flex.exceptions.FlexRequestError` then, so a caller can go on uncached.

Blocking calls, retried on 429/5xx/timeouts by the hook's retry policy (the same
:func:`~airflow_provider_flex.hooks.retry.plan_retry` decision as a generate call); async callers run
them in a thread.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_flex.exceptions import FlexRequestError
from airflow_provider_flex.hooks.retry import (
    DailyQuotaRefusal,
    FlexRetryPolicy,
    RetryableFailure,
    capacity_error,
    plan_retry,
    translate_error,
)
from airflow_provider_flex.pricing import TokenPrice, cache_storage_cost, learn_cache_minimum

if TYPE_CHECKING:
    from google import genai

#: Codes with which the API says a cache is gone: deleted or expired (404), or never this key's (403).
GONE_CODES = frozenset({403, 404})


@dataclass(frozen=True)
class CacheInfo:
    """One explicit cache as the API describes it: name, model, display name, tokens, when made and when it ends."""

    name: str
    model: str
    display_name: str
    tokens: int
    create_time: datetime | None
    expire_time: datetime | None

    def stored_hours(self, until: datetime | None = None) -> float:
        """Return the hours the cache has been kept from its creation to ``until`` (default now)."""
        if self.create_time is None:
            return 0.0
        end = until or datetime.now(timezone.utc)
        return max(0.0, (end - self.create_time).total_seconds() / 3600.0)

    def to_dict(self) -> dict[str, Any]:
        """Return the cache as JSON-safe data (for XCom, a checkpoint, a log line)."""
        return {
            "name": self.name,
            "model": self.model,
            "display_name": self.display_name,
            "tokens": self.tokens,
            "create_time": self.create_time.isoformat() if self.create_time else None,
            "expire_time": self.expire_time.isoformat() if self.expire_time else None,
        }


def cache_info(cache: Any) -> CacheInfo:
    """Return a google-genai ``CachedContent`` in this provider's words."""
    usage = getattr(cache, "usage_metadata", None)
    return CacheInfo(
        name=str(cache.name),
        model=str(cache.model or "").rsplit("/", 1)[-1],
        display_name=str(cache.display_name or ""),
        tokens=int(getattr(usage, "total_token_count", 0) or 0),
        create_time=cache.create_time,
        expire_time=cache.expire_time,
    )


def is_gone(exc: BaseException) -> bool:
    """Return whether ``exc`` says a cache is gone (deleted, expired, or not this key's)."""
    return isinstance(exc, FlexRequestError) and exc.code in GONE_CODES


class FlexCaches:
    """The Gemini API's ``cachedContents`` for one connection (``hook.caches``)."""

    def __init__(
        self,
        client: Callable[[], genai.Client],
        prices: Mapping[str, Mapping[str, TokenPrice]],
        policy: FlexRetryPolicy,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self.prices = prices
        self.policy = policy
        self._sleep = sleep

    def create(
        self,
        *,
        model: str,
        system_instruction: Any = None,
        contents: Any = None,
        ttl_s: float = 3600.0,
        display_name: str | None = None,
    ) -> CacheInfo:
        """Return a new cache of ``system_instruction`` and ``contents`` for ``model``, kept ``ttl_s`` seconds.

        Raise FlexRequestError when the API refuses it (too small for the model's minimum, a model
        without caching): a caller goes on without it.
        """
        config: dict[str, Any] = {"ttl": _duration(ttl_s)}
        if system_instruction is not None:
            config["system_instruction"] = system_instruction
        if contents is not None:
            config["contents"] = contents
        if display_name:
            config["display_name"] = display_name
        try:
            return cache_info(self._call(lambda c: c.caches.create(model=model, config=config)))
        except FlexRequestError as exc:
            stated = stated_cache_minimum(str(exc))
            if stated is not None:
                learn_cache_minimum(model, stated)  # the API's own figure beats the data (pages disagree)
            raise

    def get(self, name: str) -> CacheInfo | None:
        """Return the cache ``name``, or None when it is gone (deleted, expired)."""
        try:
            return cache_info(self._call(lambda c: c.caches.get(name=name)))
        except FlexRequestError as exc:
            if is_gone(exc):
                return None
            raise

    def list(self, display_name: str | None = None) -> list[CacheInfo]:
        """Return the project's live caches (those named ``display_name`` only, when given), newest first."""
        found = [cache_info(c) for c in self._call(lambda c: list(c.caches.list(config={"page_size": 100})))]
        return [c for c in found if display_name is None or c.display_name == display_name]

    def update(self, name: str, *, ttl_s: float) -> CacheInfo:
        """Return the cache with its TTL set to ``ttl_s`` seconds from now (the only thing a cache may change)."""
        return cache_info(self._call(lambda c: c.caches.update(name=name, config={"ttl": _duration(ttl_s)})))

    def delete(self, name: str) -> bool:
        """Delete the cache ``name``; return False when it was already gone (deleting twice is no error)."""
        try:
            self._call(lambda c: c.caches.delete(name=name))
        except FlexRequestError as exc:
            if is_gone(exc):
                return False
            raise
        return True

    def storage_cost(self, cache: CacheInfo, until: datetime | None = None) -> float | None:
        """Return USD of ``cache``'s storage from its creation to ``until`` (default now); None when unpriced."""
        return cache_storage_cost(cache.tokens, cache.stored_hours(until), model=cache.model, prices=self.prices)

    def _call(self, action: Callable[[genai.Client], Any]) -> Any:
        """Return ``action``'s result, retrying 429s, 5xx and timeouts as the retry policy says."""
        started, attempt = time.monotonic(), 0
        while True:
            attempt += 1
            try:
                return action(self._client())
            except Exception as exc:
                translated = translate_error(exc)
                if isinstance(translated, DailyQuotaRefusal):
                    raise capacity_error(translated.failure, attempt, time.monotonic() - started) from exc
                if not isinstance(translated, RetryableFailure):
                    if translated is exc:
                        raise
                    raise translated from exc
                failure = translated.failure
                delay = plan_retry(
                    self.policy,
                    attempt=attempt,
                    elapsed_s=time.monotonic() - started,
                    server_delay_s=failure.server_delay_s,
                    jitter_draw=random.random(),
                )
                if delay is None:
                    raise capacity_error(failure, attempt, time.monotonic() - started) from exc
                self._sleep(delay)


_STATED_MINIMUM = re.compile(r"min_total_token_count=(\d+)")


def stated_cache_minimum(message: str) -> int | None:
    """Return the minimum a "Cached content is too small ... min_total_token_count=N" refusal states, or None."""
    found = _STATED_MINIMUM.search(message)
    return int(found.group(1)) if found else None


def _duration(seconds: float) -> str:
    """Return seconds as a protobuf Duration string (``"3600s"``)."""
    return f"{max(1, round(seconds))}s"
