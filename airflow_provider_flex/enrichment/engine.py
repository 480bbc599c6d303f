"""The enrichment engine: many flex calls on one event loop, at the rate the quotas allow.

Every call goes through the hook: its retry policy, and the process's quota limiter
for (connection, model), which paces starts to configured or learned quotas. The
engine's pacer (``pacing``) decides how many calls run at once and how far a
row's backoff grows. A per-day quota running out stops the run cleanly: no new
call starts, calls in flight finish, results are checkpointed, and rows not yet
answered are left for a rerun (neither results nor dead letters).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from airflow_provider_flex.enrichment.media import RowMedia
from airflow_provider_flex.enrichment.pacing import EnrichmentPacer
from airflow_provider_flex.enrichment.records import PromptTemplate, row_key
from airflow_provider_flex.enrichment.store import OutputStore
from airflow_provider_flex.exceptions import FlexError, FlexQuotaExhausted, error_payload
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.hooks.results import json_safe

CHECKPOINT_ROWS = 200
CHECKPOINT_SECONDS = 5.0
PROGRESS_SECONDS = 5.0
#: Rows in progress (calling, or sitting out a retry backoff) per allowed call in flight.
ROWS_PER_CALL_SLOT = 8
#: Loggers of google-genai's HTTP clients, which log every request at INFO.
HTTP_CLIENT_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2")
_QUOTA_WORDS = {"requests_per_minute": "requests/min", "tokens_per_minute": "input tokens/min"}


@dataclass
class EnrichStats:
    total: int = 0
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    cost_usd: float = 0.0
    standard_tier_calls: int = 0
    started: float = field(default_factory=time.monotonic)
    stopped_by_cost_cap: bool = False
    quota_exhausted: FlexQuotaExhausted | None = None

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    def summary(self, pacer: EnrichmentPacer) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        exhausted = self.quota_exhausted
        return {
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "not_started": self.total - self.skipped - self.done,
            "cost_usd": round(self.cost_usd, 6),
            "elapsed_s": round(elapsed, 3),
            "rows_per_s": round(self.done / elapsed, 2) if elapsed > 0 else 0.0,
            "rate_limited_429": pacer.rate_limited_429,
            "unavailable_503": pacer.unavailable_503,
            "standard_tier_calls": self.standard_tier_calls,
            "peak_concurrency": pacer.peak_in_flight,
            "stopped_by_cost_cap": self.stopped_by_cost_cap,
            "daily_quota_exhausted": None
            if exhausted is None
            else {
                "model": exhausted.model,
                "quota": exhausted.quota,
                "quota_id": exhausted.quota_id,
                "limit": exhausted.limit,
                "reset_at": exhausted.reset_at.isoformat(),
                "message": str(exhausted),
            },
        }


class Enrichment:
    """One enrichment run over rows that passed validation.

    ``hook`` must have been built with ``pacer`` (``GeminiFlexHook(..., pacer=pacer)``),
    so that every API attempt takes one of the pacer's call slots.
    """

    def __init__(
        self,
        *,
        hook: GeminiFlexHook,
        pacer: EnrichmentPacer,
        store: OutputStore,
        template: PromptTemplate,
        key_field: str,
        model: str | None,
        config: Any,
        service_tier: str,
        max_cost_usd: float | None,
        log: Any,
        media: RowMedia | None = None,
    ) -> None:
        if hook.pacer is not pacer:
            raise ValueError("the hook must be built with the engine's pacer: GeminiFlexHook(..., pacer=pacer)")
        self.hook = hook
        self.pacer = pacer
        self.store = store
        self.template = template
        self.key_field = key_field
        self.model = model
        self.config = config
        self.service_tier = service_tier
        self.max_cost_usd = max_cost_usd
        self.log = log
        self.media = media
        self.stats = EnrichStats()
        self._pending_results: list[dict[str, Any]] = []
        self._failed: list[dict[str, Any]] = []
        self._last_checkpoint = time.monotonic()
        self._rows_in_progress = 0
        self._row_tasks: set[asyncio.Task[None]] = set()
        self._row_slots = asyncio.Semaphore(pacer.limit.maximum * ROWS_PER_CALL_SLOT)
        pacer.watch_quota(hook.quota_limiter(model))

    def _over_budget(self) -> bool:
        if self.max_cost_usd is None:
            return False
        done = self.stats.succeeded
        expected_in_flight = self._rows_in_progress * (self.stats.cost_usd / done) if done else 0.0
        return self.stats.cost_usd + expected_in_flight >= self.max_cost_usd

    async def run(self, rows: Iterator[tuple[int, dict[str, Any]]], done_keys: set[str]) -> dict[str, Any]:
        progress = asyncio.create_task(self._report_progress())
        try:
            for number, row in rows:
                key = row_key(row, self.key_field, number)
                if key in done_keys:
                    self.stats.skipped += 1
                    continue
                await self._row_slots.acquire()
                if self.stats.quota_exhausted is not None:
                    self._row_slots.release()
                    break
                if self._over_budget():
                    self._row_slots.release()
                    self.stats.stopped_by_cost_cap = True
                    break
                self._rows_in_progress += 1
                task = asyncio.create_task(self._enrich(key, number, row))
                self._row_tasks.add(task)
                task.add_done_callback(self._row_tasks.discard)
            while self._row_tasks:
                await asyncio.wait(set(self._row_tasks))
        finally:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
            if self.media is not None:
                await self.media.delete_uploads()
        self._checkpoint(force=True)
        self.store.write_failed(self._failed)
        self._log_progress()
        return self.stats.summary(self.pacer)

    async def _enrich(self, key: str, number: int, row: dict[str, Any]) -> None:
        try:
            prompt = self.template.render(row, number=number, key=key)
            media = await self.media.for_row(row, number=number, key=key) if self.media else None
            response = await self.hook.agenerate_content(
                contents=prompt, model=self.model, config=self.config, service_tier=self.service_tier, media=media
            )
            images = await asyncio.to_thread(self.store.write_images, key, response.images) if response.images else []
        except FlexQuotaExhausted as exc:
            self._stop_for_the_day(exc)  # the row is left for a rerun: neither a result nor a dead letter
        except Exception as exc:
            self._record_failure(key, number, exc)
        else:
            self.pacer.on_success()
            self.stats.succeeded += 1
            self.stats.cost_usd += response.cost_usd or 0.0
            if response.service_tier != "flex":
                self.stats.standard_tier_calls += 1
            self._pending_results.append(
                {
                    "key": key,
                    "text": response.text,
                    "parsed": json_safe(response.parsed),
                    "usage": dict(vars(response.usage)),
                    "service_tier": response.service_tier,
                    "cost_usd": response.cost_usd,
                    "model": response.model,
                    "finish_reason": response.finish_reason,
                    "attempts": response.attempts,
                    **({"images": images} if images else {}),
                }
            )
        finally:
            self._rows_in_progress -= 1
            self._row_slots.release()
        self._checkpoint()

    def _stop_for_the_day(self, exc: FlexQuotaExhausted) -> None:
        """No new call after a per-day 429: rows not in a call stop now, calls in flight finish."""
        if self.stats.quota_exhausted is None:
            self.stats.quota_exhausted = exc
            self.log.warning("%s Stopping: calls in flight finish, the rest are left for a rerun.", exc)
        current = asyncio.current_task()
        for task in list(self._row_tasks):
            if task is not current and task not in self.pacer.tasks_in_call:
                task.cancel()

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

    async def _report_progress(self) -> None:
        """A progress line every few seconds, whether or not rows finish (they may all sit in backoffs)."""
        while True:
            await asyncio.sleep(PROGRESS_SECONDS)
            self._checkpoint()
            self._log_progress()

    def pacing_note(self) -> str:
        """What holds the run back right now, in words: a quota being paced to, a server pause, a spent day."""
        exhausted = self.stats.quota_exhausted
        if exhausted is not None:
            return f"; daily quota spent, waiting for its reset at {exhausted.reset_at:%Y-%m-%d %H:%M} UTC"
        limiter = self.hook.quota_limiter(self.model)
        notes = [
            f"pacing to {limit:,} {_QUOTA_WORDS.get(name, name)} ({source})"
            for name, (limit, source) in limiter.known_limits().items()
        ]
        paused = max(limiter.paused_until, self.pacer.limit.paused_until) - time.monotonic()
        if paused > 0:
            notes.append(f"paused {paused:.0f}s by the server")
        return "; " + ", ".join(notes) if notes else ""

    def _log_progress(self) -> None:
        stats = self.stats
        summary = stats.summary(self.pacer)
        remaining = stats.total - stats.skipped - stats.done
        rate = summary["rows_per_s"]
        eta = f"{remaining / rate:.0f}s" if rate else "n/a"
        self.log.info(
            "Enrichment: %d/%d rows done (%d skipped, %d failed), %.1f rows/s, ETA %s, concurrency %d, "
            "cost $%.4f, 429s %d, 503s %d%s",
            stats.done + stats.skipped,
            stats.total,
            stats.skipped,
            stats.failed,
            rate,
            eta,
            self.pacer.limit.allowed,
            stats.cost_usd,
            self.pacer.rate_limited_429,
            self.pacer.unavailable_503,
            self.pacing_note(),
        )


@contextlib.contextmanager
def quiet_http_client_logs() -> Iterator[None]:
    """Silence the HTTP client's one INFO line per request for the run (progress lines summarise).

    Over thousands of rows those lines flood the task log and cost a measurable share
    of the engine's CPU (benchmarks/enrich_throughput.py --scenario cpu).
    """
    loggers = [logging.getLogger(name) for name in HTTP_CLIENT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def run_enrichment(
    engine: Enrichment, rows_factory: Callable[[], Iterator[tuple[int, dict[str, Any]]]], done: set[str]
) -> dict[str, Any]:
    """Run ``engine`` to the end on a fresh event loop (the shared client drops that loop's pool after)."""

    async def main() -> dict[str, Any]:
        await engine.hook.aprepare()
        return await engine.run(rows_factory(), done)

    with quiet_http_client_logs():
        return asyncio.run(main())


def reset_time(summary: dict[str, Any]) -> datetime | None:
    """When the run's spent daily quota resets, from its summary (None if it was not spent)."""
    exhausted = summary.get("daily_quota_exhausted")
    return datetime.fromisoformat(exhausted["reset_at"]).astimezone(UTC) if exhausted else None
