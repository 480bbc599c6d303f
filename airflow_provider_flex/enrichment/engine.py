"""The enrichment engine: many flex calls on one event loop, at the rate the API allows.

The limit is on API calls in flight, not rows: a row sitting out a retry backoff
holds no call slot, so a shedding storm does not idle the capacity the rate limit
allows. The limit adapts AIMD-style between 1 and a cap: it grows by one per
window of successes and is cut by 30% at most once per window on 429s, which
also pace call starts per second; no call starts while a server-requested
``retryDelay`` is pending. Every call still goes through the hook's retry
policy; the engine decides how many calls run at once and how far a row's
backoff grows (with the failure streak all rows share).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_flex.enrichment.records import PromptTemplate, row_key
from airflow_provider_flex.enrichment.store import OutputStore
from airflow_provider_flex.exceptions import FlexError, error_payload
from airflow_provider_flex.hooks.gemini_flex import Failure, GeminiFlexHook

CHECKPOINT_ROWS = 200
CHECKPOINT_SECONDS = 5.0
PROGRESS_SECONDS = 5.0
SHRINK_FACTOR = 0.7
RATE_WINDOW_S = 1.0
#: A 429 sets the start rate to this fraction of the starts seen in the last window.
RATE_SHRINK_FACTOR = 0.9
#: Rows in progress (calling, or sitting out a retry backoff) per allowed call in flight.
ROWS_PER_CALL_SLOT = 8


@dataclass
class AdaptiveLimit:
    """How many calls may run at once, and how many may start per second.

    A 429 is our own quota talking: cut the calls in flight by 30%, and the rate
    to 90% of the starts seen in the last second, at most once per window of
    calls (the calls already in flight when the first 429 came back mostly get
    one too; cutting for each would collapse the limit). Both grow back by about
    one per window of successes. A 503 is the server's shared capacity, not our
    rate: the row's own backoff thins its calls, so the limits stay. Any
    server-requested delay pauses new calls. Until the first 429 the rate is free.
    """

    maximum: int
    current: float = 4.0
    paused_until: float = 0.0
    max_rate: float | None = None
    finished_calls: int = 0
    finished_at_last_cut: int | None = None
    recent_starts: deque[float] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.current = float(min(self.maximum, max(1.0, self.current)))

    @property
    def allowed(self) -> int:
        return max(1, int(self.current))

    def _starts_in_window(self, now: float) -> int:
        while self.recent_starts and now - self.recent_starts[0] >= RATE_WINDOW_S:
            self.recent_starts.popleft()
        return len(self.recent_starts)

    def wait_before_start(self, now: float) -> float:
        """Seconds until the next call may start: a server's pause, or the learned rate."""
        started = self._starts_in_window(now)
        wait = self.paused_until - now
        if self.max_rate is not None and started >= self.max_rate:
            wait = max(wait, RATE_WINDOW_S - (now - self.recent_starts[0]))
        return max(0.0, wait)

    def record_start(self, now: float) -> None:
        self.recent_starts.append(now)

    def on_success(self) -> None:
        self.finished_calls += 1
        self.current = min(float(self.maximum), self.current + 1.0 / self.current)
        if self.max_rate is not None:
            self.max_rate += 1.0 / self.max_rate

    def on_failure(self, failure: Failure, now: float) -> None:
        self.finished_calls += 1
        if failure.server_delay_s:
            self.paused_until = max(self.paused_until, now + failure.server_delay_s)
        if failure.status_code != 429:
            return
        last = self.finished_at_last_cut
        if last is None or self.finished_calls - last >= self.allowed:
            self.current = max(1.0, self.current * SHRINK_FACTOR)
            started = self._starts_in_window(now)
            ceiling = started if self.max_rate is None else min(self.max_rate, started)
            self.max_rate = max(1.0, ceiling * RATE_SHRINK_FACTOR)
            self.finished_at_last_cut = self.finished_calls


@dataclass
class EnrichStats:
    total: int = 0
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    cost_usd: float = 0.0
    rate_limited_429: int = 0
    unavailable_503: int = 0
    standard_tier_calls: int = 0
    peak_concurrency: int = 0
    started: float = field(default_factory=time.monotonic)
    stopped_by_cost_cap: bool = False

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    def summary(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        return {
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "not_started": self.total - self.skipped - self.done,
            "cost_usd": round(self.cost_usd, 6),
            "elapsed_s": round(elapsed, 3),
            "rows_per_s": round(self.done / elapsed, 2) if elapsed > 0 else 0.0,
            "rate_limited_429": self.rate_limited_429,
            "unavailable_503": self.unavailable_503,
            "standard_tier_calls": self.standard_tier_calls,
            "peak_concurrency": self.peak_concurrency,
            "stopped_by_cost_cap": self.stopped_by_cost_cap,
        }


class Enrichment:
    """One enrichment run over rows that passed validation."""

    def __init__(
        self,
        *,
        hook: GeminiFlexHook,
        store: OutputStore,
        template: PromptTemplate,
        key_field: str,
        model: str | None,
        config: dict[str, Any],
        service_tier: str,
        max_concurrency: int,
        max_cost_usd: float | None,
        log: Any,
    ) -> None:
        self.hook = hook
        self.store = store
        self.template = template
        self.key_field = key_field
        self.model = model
        self.config = config
        self.service_tier = service_tier
        self.max_cost_usd = max_cost_usd
        self.log = log
        self.limit = AdaptiveLimit(max_concurrency)
        self.stats = EnrichStats()
        self._pending_results: list[dict[str, Any]] = []
        self._failed: list[dict[str, Any]] = []
        self._last_checkpoint = time.monotonic()
        self._last_progress = time.monotonic()
        self._calls_in_flight = 0
        self._rows_in_progress = 0
        self._row_slots = asyncio.Semaphore(max_concurrency * ROWS_PER_CALL_SLOT)
        self._slot_freed = asyncio.Event()
        hook.failure_listeners.append(self._on_failure)
        hook.attempt_gate = self._call_slot
        hook.backoff_step = self._backoff_step
        self._failure_streak = 0  # retryable failures since the last success, across all rows
        hook.call_log_level = logging.DEBUG  # progress lines summarise; per-call lines would flood the task log

    def _backoff_step(self, attempt: int) -> int:
        """A row's backoff grows with the shared failure streak, not its own count alone.

        Under random shedding (half the calls fail, the others succeed) one row failing six
        times is bad luck, not an outage: its wait stays short. When every call fails, the
        streak outgrows each row's count and each row backs off as far as its own attempts.
        """
        return max(1, min(attempt, self._failure_streak))

    def _on_failure(self, failure: Failure) -> None:
        if failure.server_delay_s is None:  # a 429 with retryDelay is about our rate, not the API's capacity
            self._failure_streak += 1
        if failure.status_code == 429:
            self.stats.rate_limited_429 += 1
        elif failure.status_code == 503:
            self.stats.unavailable_503 += 1
        self.limit.on_failure(failure, time.monotonic())

    def _over_budget(self) -> bool:
        if self.max_cost_usd is None:
            return False
        done = self.stats.succeeded
        expected_in_flight = self._rows_in_progress * (self.stats.cost_usd / done) if done else 0.0
        return self.stats.cost_usd + expected_in_flight >= self.max_cost_usd

    async def run(self, rows: Iterator[tuple[int, dict[str, Any]]], done_keys: set[str]) -> dict[str, Any]:
        tasks: set[asyncio.Task[None]] = set()
        for number, row in rows:
            key = row_key(row, self.key_field, number)
            if key in done_keys:
                self.stats.skipped += 1
                continue
            await self._row_slots.acquire()
            if self._over_budget():
                self._row_slots.release()
                self.stats.stopped_by_cost_cap = True
                break
            self._rows_in_progress += 1
            task = asyncio.create_task(self._enrich(key, number, row))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.wait(set(tasks))
        self._checkpoint(force=True)
        self.store.write_failed(self._failed)
        self._log_progress(force=True)
        return self.stats.summary()

    @asynccontextmanager
    async def _call_slot(self) -> AsyncIterator[None]:
        """Held by each API attempt (the hook's ``attempt_gate``): at most ``limit.allowed`` at once."""
        while True:
            wait = self.limit.wait_before_start(time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if self._calls_in_flight < self.limit.allowed:
                break
            self._slot_freed.clear()
            await self._slot_freed.wait()
        self.limit.record_start(time.monotonic())
        self._calls_in_flight += 1
        self.stats.peak_concurrency = max(self.stats.peak_concurrency, self._calls_in_flight)
        try:
            yield
        finally:
            self._calls_in_flight -= 1
            self._slot_freed.set()

    async def _enrich(self, key: str, number: int, row: dict[str, Any]) -> None:
        try:
            prompt = self.template.render(row, number=number, key=key)
            response = await self.hook.agenerate_content(
                contents=prompt, model=self.model, config=self.config, service_tier=self.service_tier
            )
        except Exception as exc:
            self._record_failure(key, number, exc)
        else:
            self._failure_streak = 0
            self.limit.on_success()
            self.stats.succeeded += 1
            self.stats.cost_usd += response.cost_usd or 0.0
            if response.service_tier != "flex":
                self.stats.standard_tier_calls += 1
            result = response.to_dict()
            self._pending_results.append(
                {
                    "key": key,
                    "text": result["text"],
                    "parsed": result["parsed"],
                    "usage": result["usage"],
                    "service_tier": result["service_tier"],
                    "cost_usd": result["cost_usd"],
                    "model": result["model"],
                    "finish_reason": result["finish_reason"],
                    "attempts": result["attempts"],
                }
            )
        finally:
            self._rows_in_progress -= 1
            self._row_slots.release()
        self._checkpoint()
        self._log_progress()

    def _record_failure(self, key: str, number: int, exc: Exception) -> None:
        if not isinstance(exc, FlexError | ValueError | TypeError):
            self.log.exception("Row %d (key %s) failed unexpectedly", number, key)
        payload = error_payload(exc)
        self.stats.failed += 1
        self._failed.append(
            {"key": key, "row": number, "error": payload["message"], "error_type": payload["error_type"]}
        )

    def _checkpoint(self, *, force: bool = False) -> None:
        due = len(self._pending_results) >= CHECKPOINT_ROWS or (
            time.monotonic() - self._last_checkpoint >= CHECKPOINT_SECONDS
        )
        if self._pending_results and (due or force):
            self.store.write_results(self._pending_results)
            self._pending_results = []
            self._last_checkpoint = time.monotonic()

    def _log_progress(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_SECONDS:
            return
        self._last_progress = now
        stats = self.stats
        summary = stats.summary()
        remaining = stats.total - stats.skipped - stats.done
        rate = summary["rows_per_s"]
        eta = f"{remaining / rate:.0f}s" if rate else "n/a"
        self.log.info(
            "Enrichment: %d/%d rows done (%d skipped, %d failed), %.1f rows/s, ETA %s, concurrency %d, "
            "cost $%.4f, 429s %d, 503s %d",
            stats.done + stats.skipped,
            stats.total,
            stats.skipped,
            stats.failed,
            rate,
            eta,
            self.limit.allowed,
            stats.cost_usd,
            stats.rate_limited_429,
            stats.unavailable_503,
        )


def run_enrichment(
    engine: Enrichment, rows_factory: Callable[[], Iterator[tuple[int, dict[str, Any]]]], done: set[str]
) -> dict[str, Any]:
    """Run ``engine`` to the end on a fresh event loop, closing the async client after."""

    async def main() -> dict[str, Any]:
        await engine.hook.aprepare()
        try:
            return await engine.run(rows_factory(), done)
        finally:
            await engine.hook.client.aio.aclose()

    return asyncio.run(main())
