"""One explicit context cache per enrichment run (``context_cache="auto"``): made when it pays, gone when the run is.

When the part every row shares (system instruction and ``shared_contents``) reaches the model's cache
minimum and the rows still to do save more on it (cached tokens at about a tenth of the input price)
than the cache's storage costs for the expected run, the run makes one cache and every flex row names
it. Its TTL is sized to the expected run and extended while the run goes on; it is deleted when the
run ends, whatever the end (success, failure, the cost cap, a spent day).

A crash cannot leave it behind for long: its name is checkpointed under ``output_path`` before first
use, and its display name derives from the output location, so the retry or rerun finds it (by the
checkpoint, or by listing caches of that display name after a crash between creating and
checkpointing), re-attaches to it when it holds the same shared part, and deletes it otherwise. At
most two caches are made for one output, whatever crashes. Batch-route rows never name a cache (the
Batch API refuses them: python-genai #509, #1313). A cache the API refuses (too small, a model
without caching) leaves the run going uncached, with one warning.

Pure decisions (:func:`plan_cache`, :func:`cache_ttl`, :func:`display_name_for`) are tested alone;
:class:`RunCache` is the I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow_provider_flex.enrichment.shared_prompt import SharedPrefix, digest_of
from airflow_provider_flex.enrichment.store import OutputStore, location_digest
from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.hooks.caches import CacheInfo, FlexCaches, is_gone
from airflow_provider_flex.pricing import TokenPrice, cache_storage_cost, min_cache_tokens, price_of

#: TTL bounds (seconds), and how much longer than the expected run a cache is kept at first.
MIN_TTL_S = 600.0
MAX_TTL_S = 6 * 3600.0
TTL_RUN_FACTOR = 1.5
#: Rows per second assumed for the TTL when no quota is known (the keeper extends a TTL the run outlives).
ASSUMED_ROWS_PER_S = 1.0
#: How often the keeper looks at the cache's expiry (at most), and the share of the TTL left that makes it extend.
KEEP_ALIVE_CHECK_S = 30.0
EXTEND_WHEN_LEFT = 0.5


@dataclass(frozen=True)
class CachePlan:
    """Whether the run makes a cache, why, and for how long at first."""

    make: bool
    reason: str
    shared_tokens: int = 0
    ttl_s: float = 0.0
    #: ``context_cache``: with ``off`` a cache left by an earlier run is deleted, never re-attached.
    mode: str = "auto"


def cache_ttl(rows: int, rows_per_s: float | None) -> float:
    """Return a first TTL for ``rows`` at ``rows_per_s``: the expected run and half again, within bounds."""
    rate = rows_per_s if rows_per_s and rows_per_s > 0 else ASSUMED_ROWS_PER_S
    return min(MAX_TTL_S, max(MIN_TTL_S, rows / rate * TTL_RUN_FACTOR))


def plan_cache(
    *,
    mode: str,
    shared_tokens: int,
    rows: int,
    model: str,
    tier: str,
    prices: Mapping[str, Mapping[str, TokenPrice]],
    rows_per_s: float | None = None,
) -> CachePlan:
    """Return whether a run of ``rows`` flex rows sharing ``shared_tokens`` leading tokens should make a cache.

    It should when the mode is ``auto``, the shared part reaches the model's cache minimum, and the
    rows save more (shared tokens at the tier's input price less the cached price) than the cache's
    storage costs for its first TTL.
    """
    ttl = cache_ttl(rows, rows_per_s)
    if mode != "auto":
        return CachePlan(False, "context_cache='off'", shared_tokens, ttl, mode)
    if not rows:
        return CachePlan(False, "no rows to do", shared_tokens, ttl)
    minimum = min_cache_tokens(model)
    if shared_tokens < minimum:
        return CachePlan(False, f"the shared part is {shared_tokens} tokens, under {model}'s minimum of {minimum}",
                         shared_tokens, ttl)  # fmt: skip
    price = price_of(model, tier, prices)
    storage = cache_storage_cost(shared_tokens, ttl / 3600, model=model, prices=prices)
    if price is None or price.cached_input is None or storage is None:
        return CachePlan(False, f"no cached-token or storage price for {model} on {tier}", shared_tokens, ttl)
    saving = rows * shared_tokens * (price.input - price.cached_input) / 1_000_000
    if saving <= storage:
        return CachePlan(False, f"{rows} rows would save ${saving:.6f}, less than the ${storage:.6f} of storage",
                         shared_tokens, ttl)  # fmt: skip
    return CachePlan(True, f"{rows} rows save about ${saving:.4f} for ${storage:.4f} of storage", shared_tokens, ttl)


def display_name_for(output_path: str) -> str:
    """Return the display name of caches made for ``output_path`` (a rerun finds its cache by it)."""
    return f"airflow-flex-enrich {location_digest(output_path, 16)} {output_path.rstrip('/')[-60:]}"[:128]


class RunCache:
    """The run's one explicit cache: found or made at :meth:`open`, kept alive, deleted at :meth:`close`."""

    def __init__(
        self, caches: FlexCaches, *, store: OutputStore, prefix: SharedPrefix, model: str, plan: CachePlan, log: Any
    ) -> None:
        self.caches = caches
        self.store = store
        self.prefix = prefix
        self.model = model.removeprefix("models/")
        self.plan = plan
        self.log = log
        self.display_name = display_name_for(store.output_path)
        self.digest = digest_of({"model": self.model, "instruction": prefix.system_instruction,
                                 "contents": prefix.digest()})  # fmt: skip
        self.info: CacheInfo | None = None
        self.reattached = False
        self.refused: str | None = None
        self.lost = False
        self.storage_usd = 0.0
        self._row_config: tuple[Any, Any] | None = None

    @property
    def name(self) -> str | None:
        """Return the cache rows name now (None: rows go uncached)."""
        return None if self.info is None or self.lost else self.info.name

    def open(self) -> None:
        """Re-attach to this output's cache if it lives and holds the same shared part; delete any other left
        behind; make one if the plan says so. A cache the API refuses leaves the run uncached (one warning)."""
        try:
            kept = self._reattach_or_clean(reuse=self.plan.mode == "auto")
        except FlexError as exc:  # the caches could not be listed: go on uncached, the next run cleans up
            self.log.warning("Could not look for this output's context caches (%s): rows go uncached.", exc)
            return
        if kept is not None:
            self.info, self.reattached = self.caches.update(kept.name, ttl_s=self.plan.ttl_s), True
            self.log.info("Context cache %s re-attached (%d tokens).", kept.name, kept.tokens)
            return
        if not self.plan.make:
            self.log.info("No context cache: %s.", self.plan.reason)
            return
        try:
            info = self.caches.create(
                model=self.model,
                system_instruction=self.prefix.system_instruction,
                contents=self.prefix.cache_contents(),
                ttl_s=self.plan.ttl_s,
                display_name=self.display_name,
            )
        except FlexError as exc:  # refused (too small, a model without caching) or unavailable
            self.refused = str(exc)
            self.log.warning("The API refused a context cache (%s): rows go uncached.", exc)
            return
        self.store.write_cache_checkpoint({"name": info.name, "digest": self.digest})  # before first use
        self.info = info
        self.log.info("Context cache %s made: %d shared tokens for %.0f s (%s).", info.name, info.tokens,
                      self.plan.ttl_s, self.plan.reason)  # fmt: skip

    def _reattach_or_clean(self, *, reuse: bool) -> CacheInfo | None:
        """Return this output's live cache to reuse (when ``reuse``), deleting every other one made for it."""
        recorded = self.store.read_cache_checkpoint()
        found = {c.name: c for c in self.caches.list(self.display_name)}
        if recorded and recorded.get("name") and recorded["name"] not in found:
            checkpointed = self.caches.get(recorded["name"])
            if checkpointed is not None:
                found[checkpointed.name] = checkpointed
        keep = None
        if reuse and recorded and recorded.get("digest") == self.digest and recorded.get("name") in found:
            keep = found.pop(recorded["name"])
        for leftover in found.values():
            self.storage_usd += self.caches.storage_cost(leftover) or 0.0
            self.caches.delete(leftover.name)
            self.log.warning("Deleted context cache %s, left behind by an earlier run of this output.", leftover.name)
        if keep is None and recorded is not None:
            self.store.remove_cache_checkpoint()
        return keep

    def row_config(self, base: Any) -> Any:
        """Return the generate config of a row naming the cache: ``base`` without what the cache holds."""
        if self._row_config is None or self._row_config[0] is not base:
            update = {"system_instruction": None, "cached_content": self.name}
            self._row_config = (base, base.model_copy(update=update))
        return self._row_config[1]

    def forget(self, exc: BaseException) -> bool:
        """Return whether ``exc`` says the cache is gone (the row is sent again uncached); warn the first time."""
        if self.info is None or not is_gone(exc) or "CachedContent" not in str(exc):
            return False
        if not self.lost:
            self.lost = True
            self.log.warning("Context cache %s is gone (%s): the remaining rows go uncached.", self.info.name, exc)
        return True

    async def keep_alive(self) -> None:
        """Extend the TTL whenever less than half of it is left, until cancelled (the run's end)."""
        ttl = self.plan.ttl_s
        while self.name is not None:
            await asyncio.sleep(min(KEEP_ALIVE_CHECK_S, ttl / 4))
            expires = self.info.expire_time if self.info else None
            left = (expires - datetime.now(timezone.utc)).total_seconds() if expires else 0.0
            if left < ttl * EXTEND_WHEN_LEFT and self.name is not None:
                try:
                    self.info = await asyncio.to_thread(self.caches.update, self.name, ttl_s=ttl)
                except FlexError as exc:
                    if not self.forget(exc):
                        self.log.warning("Could not extend context cache %s: %s", self.name, exc)

    def close(self) -> float:
        """Delete the cache and its checkpoint; return the storage it cost (USD). A failed delete keeps the
        checkpoint, so the next run of this output deletes it."""
        if self.info is None:
            return self.storage_usd
        started = time.monotonic()
        try:
            self.caches.delete(self.info.name)
        except FlexError as exc:
            self.log.warning("Could not delete context cache %s (%s); the next run of %s deletes it.",
                             self.info.name, exc, self.store.output_path)  # fmt: skip
            return self.storage_usd
        self.storage_usd += self.caches.storage_cost(self.info) or 0.0
        self.store.remove_cache_checkpoint()
        self.log.info("Context cache %s deleted (storage $%.6f) in %.2f s.", self.info.name, self.storage_usd,
                      time.monotonic() - started)  # fmt: skip
        return self.storage_usd

    def to_dict(self) -> dict[str, Any]:
        """Return what the summary says of the cache: made or not, why, its name, tokens and storage cost."""
        return {
            "name": self.info.name if self.info else None,
            "made": self.info is not None and not self.reattached,
            "reattached": self.reattached,
            "shared_tokens": self.plan.shared_tokens,
            "reason": self.refused or self.plan.reason,
            "lost": self.lost,
        }
