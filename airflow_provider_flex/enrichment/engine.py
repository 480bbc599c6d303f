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
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from airflow_provider_flex.enrichment.batch_route import Routing
from airflow_provider_flex.enrichment.media import RowMedia
from airflow_provider_flex.enrichment.pacing import EnrichmentPacer
from airflow_provider_flex.enrichment.records import PromptTemplate, row_key
from airflow_provider_flex.enrichment.routing import measured_rate, quota_rate
from airflow_provider_flex.enrichment.store import OutputStore, result_record
from airflow_provider_flex.enrichment.summary import EnrichStats, EnrichSummary
from airflow_provider_flex.exceptions import (
    FlexError,
    FlexQuotaExhausted,
    FlexRequestError,
    FlexResponseError,
    error_payload,
)
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.hooks.results import json_safe

CHECKPOINT_ROWS = 200
CHECKPOINT_SECONDS = 5.0
#: How often a run looks whether the process that started it (Airflow's task supervisor) is still there.
SUPERVISOR_CHECK_SECONDS = 0.5
PROGRESS_SECONDS = 5.0
#: Rows in progress (calling, or sitting out a retry backoff) per allowed call in flight.
ROWS_PER_CALL_SLOT = 8
#: Loggers of google-genai's HTTP clients, which log every request at INFO.
HTTP_CLIENT_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2")
#: Refusals about the run, not the row: a key that is missing or not valid, or a model that does not exist.
RUN_WIDE_CODES = frozenset({401, 403, 404})
#: A 400 with one message from this many rows, before any row succeeded, is taken to be about the run.
RUN_WIDE_400_ROWS = 3
#: Seconds between two looks at whether flex can still finish its rows by the deadline (route="auto").
ROUTE_SECONDS = 2.0
_QUOTA_WORDS = {"requests_per_minute": "requests/min", "tokens_per_minute": "input tokens/min"}


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
        routing: Routing | None = None,
        total: int = 0,
        include_prompt: bool = False,
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
        self.routing = routing
        self.include_prompt = include_prompt
        self.stats = EnrichStats(total=total)
        self._next_position = 0
        self._reclaimed: list[str] = []
        #: Keys of the rows refused with each 400 message before any row succeeded (a run-wide 400 shows here).
        self._early_400s: dict[str, list[str]] = {}
        self._pending_results: list[dict[str, Any]] = []
        self._failed: list[dict[str, Any]] = []
        self._last_checkpoint = time.monotonic()
        self._rows_in_progress = 0
        self._parent_pid = os.getppid()
        self._row_tasks: set[asyncio.Task[None]] = set()
        # Routing by deadline decides on rows not yet started, so flex starts no more than it can call at once.
        self._row_slots = asyncio.Semaphore(pacer.limit.maximum * (1 if routing is not None else ROWS_PER_CALL_SLOT))
        pacer.watch_quota(hook.quota_limiter(model))

    def _over_budget(self) -> bool:
        if self.max_cost_usd is None:
            return False
        done = self.stats.succeeded
        expected_in_flight = self._rows_in_progress * (self.stats.cost_usd / done) if done else 0.0
        return self.stats.cost_usd + expected_in_flight >= self.max_cost_usd

    async def run(self, rows: Iterator[tuple[int, dict[str, Any]]], done_keys: set[str]) -> EnrichSummary:
        progress = asyncio.create_task(self._report_progress())
        watch = asyncio.create_task(self._watch_supervisor())
        routing = self.routing
        in_batch: set[str] = set()
        side_tasks: list[asyncio.Task[None]] = []
        if routing is not None:
            in_batch = routing.batch.keys()
            if routing.router.route == "batch":
                routing.batch.hand_over(routing.router.hand_over_from(0))
            elif routing.router.route == "auto":  # decide before flex starts a row, when the rate is known
                self._hand_over(routing, routing.router.move(0, self.flex_rate()))
            side_tasks = [asyncio.create_task(routing.batch.run(until_done=False))]
            if routing.router.route == "auto":
                side_tasks.append(asyncio.create_task(self._route_by_deadline(routing)))
        try:
            for position, (number, row) in enumerate(rows):
                self._next_position = position
                key = row_key(row, self.key_field, number)
                if key in done_keys or key in in_batch:
                    self.stats.skipped += key in done_keys
                    continue
                if routing is not None and not routing.router.flex_may_take(position):
                    break
                await self._row_slots.acquire()
                if (
                    self.stats.quota_exhausted is not None
                    or self.stats.run_refused is not None
                    or self.stats.orphaned
                    or (routing is not None and not routing.router.flex_may_take(position))
                ):
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
            else:
                self._next_position += 1
            while self._row_tasks:
                await asyncio.wait(set(self._row_tasks))
            if routing is not None:
                await self._finish_batches(routing, side_tasks)
        finally:
            for task in (progress, watch, *side_tasks):
                task.cancel()
            for task in (progress, watch):  # a progress line the log could not take (its supervisor gone) ends here
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for task in side_tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.media is not None:
                await self.media.delete_uploads()
        self._checkpoint(force=True)
        self.store.write_failed(self._failed)
        self._log_progress()
        return self.summary()

    def summary(self) -> EnrichSummary:
        return self.stats.summary(self.pacer, model=self.model, dead_letters=self._failed)

    async def _route_by_deadline(self, routing: Routing) -> None:
        """Every few seconds, hand the rows flex can no longer finish by the deadline to batch jobs."""
        while True:
            self._hand_over(
                routing, routing.router.move(self._next_position, self.flex_rate(), in_progress=self._rows_in_progress)
            )
            await asyncio.sleep(ROUTE_SECONDS)

    def _hand_over(self, routing: Routing, keys: list[str]) -> None:
        keys = keys + self._reclaimed
        self._reclaimed = []
        if keys:
            self.log.info("Routing %d rows to the Batch API (flex cannot finish them by the deadline).", len(keys))
            routing.batch.hand_over(keys)

    async def _finish_batches(self, routing: Routing, side_tasks: list[asyncio.Task[None]]) -> None:
        """After flex: stop routing, let the batch loop end its step, then wait for the jobs or leave them."""
        for task in side_tasks[1:]:
            task.cancel()
        self._hand_over(routing, [])
        routing.batch.request_stop()
        await side_tasks[0]
        if routing.wait_for_batches:
            await routing.batch.run(until_done=True)
        else:
            await routing.batch.step()  # create what was handed over last, so the deferral has jobs to watch
        self.stats.in_batch = routing.batch.pending_rows
        self.stats.add_batch(routing.batch.stats)
        self._failed.extend(routing.batch.stats.dead_letters)

    def flex_rate(self) -> float | None:
        """Rows per second flex can sustain: from the known quotas, else as measured so far."""
        flex = self.stats.flex
        per_row = flex.tokens.input_tokens / flex.rows if flex.rows else None
        known = quota_rate(self.hook.quota_limiter(self.model).known_limits(), per_row)
        if known is not None:
            return known
        return measured_rate(flex.rows, time.monotonic() - self.stats.started)

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
        except FlexRequestError as exc:
            if self.stats.run_refused is None and not self._refuses_the_run(exc, key, number):
                self._record_failure(key, number, exc)
        except FlexResponseError as exc:
            if exc.paid is not None:  # an unusable answer was billed all the same
                self.stats.unusable.count(exc.paid)
            self._record_failure(key, number, exc)
        except Exception as exc:
            self._record_failure(key, number, exc)
        except asyncio.CancelledError:
            if self.routing is not None and self.stats.run_refused is None:  # a spent day: the row goes to batch
                self._reclaimed.append(key)
            raise
        else:
            self.pacer.on_success()
            self.stats.flex.count(response)
            if response.service_tier != "flex":
                self.stats.standard_tier_calls += 1
            record = result_record(key, response, "flex", images)
            if self.include_prompt:
                record["prompt"] = prompt if isinstance(prompt, str) else json_safe(prompt)
            self._pending_results.append(record)
        finally:
            self._rows_in_progress -= 1
            self._row_slots.release()
        self._checkpoint()

    def _stop_for_the_day(self, exc: FlexQuotaExhausted) -> None:
        """No new call after a per-day 429: rows not in a call stop now, calls in flight finish."""
        if self.stats.quota_exhausted is None:
            self.stats.quota_exhausted = exc
            if self.routing is not None and self.routing.router.route == "auto":
                self.log.warning("%s Flex stops; calls in flight finish, the rest go to the Batch API.", exc)
                self._hand_over(self.routing, self.routing.router.hand_over_from(self._next_position))
            else:
                self.log.warning("%s Stopping: calls in flight finish, the rest are left for a rerun.", exc)
        self._cancel_rows_not_in_call()

    def _refuses_the_run(self, exc: FlexRequestError, key: str, number: int) -> bool:
        """Whether the API refused the run rather than this row; if so, stop it (see ``refuses_the_run``)."""
        alike = self._early_400s.setdefault(exc.message, [])
        if exc.code == 400 and not self.stats.succeeded:
            alike.append(key)
        if not refuses_the_run(exc.code, same_400_rows=len(alike), any_succeeded=bool(self.stats.succeeded)):
            return False
        self.stats.run_refused = exc
        refused = set(alike)
        kept = [row for row in self._failed if row["key"] not in refused]
        self.stats.failed -= len(self._failed) - len(kept)  # the earlier rows with this 400 are no dead letters
        self._failed = kept
        self.log.error("%s Stopping the run: calls in flight finish; no row is a dead letter for it.", exc)
        self._cancel_rows_not_in_call()
        return True

    def _cancel_rows_not_in_call(self) -> None:
        """Stop every other row whose request has not gone (waiting for a slot, a quota turn or a backoff)."""
        current = asyncio.current_task()
        for task in list(self._row_tasks):
            if task is not current and task not in self.pacer.tasks_sending:
                task.cancel()

    def _record_failure(self, key: str, number: int, exc: Exception) -> None:
        if not isinstance(exc, FlexError | ValueError | TypeError):
            self.log.exception("Row %d (key %s) failed unexpectedly", number, key)
        payload = error_payload(exc)
        self.stats.failed += 1
        letter = {"key": key, "row": number, "error": payload["message"], "error_type": payload["error_type"]}
        if isinstance(exc, FlexResponseError):  # what went wrong with the answer, and what it cost
            letter["error_kind"] = exc.reason
            if exc.spend is not None:
                letter.update(model=exc.spend["model"], cost_usd=exc.spend["cost_usd"], usage=exc.spend["usage"])
        self._failed.append(letter)

    def _checkpoint(self, *, force: bool = False) -> None:
        due = len(self._pending_results) >= CHECKPOINT_ROWS or (
            time.monotonic() - self._last_checkpoint >= CHECKPOINT_SECONDS
        )
        if self._pending_results and (due or force):
            self.store.write_results(self._pending_results)
            self._pending_results = []
            self._last_checkpoint = time.monotonic()

    async def _watch_supervisor(self) -> None:
        """Stop the run when the process that started this one is gone (a Celery worker killed under its task).

        Airflow then fails the task after its heartbeat timeout and retries it, maybe on another worker;
        calls this orphan kept starting would be paid twice and answered twice. Calls in flight finish and
        are checkpointed, so the retry does not send them again.
        """
        while True:
            await asyncio.sleep(SUPERVISOR_CHECK_SECONDS)
            if os.getppid() != self._parent_pid:
                self.stats.orphaned = True
                self._cancel_rows_not_in_call()
                with contextlib.suppress(Exception):  # the task's log went through the supervisor as well
                    self.log.error(
                        "The task's supervisor (pid %d) is gone: starting no more rows; calls in flight finish and "
                        "are checkpointed for the retry.",
                        self._parent_pid,
                    )
                return

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
        batch_note = self.routing.batch.progress_note() if self.routing is not None else ""
        return ("; " + ", ".join(notes) if notes else "") + batch_note

    def _log_progress(self) -> None:
        stats = self.stats
        remaining = stats.total - stats.skipped - stats.done
        rate = stats.rows_per_s()
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


def refuses_the_run(code: int | None, *, same_400_rows: int, any_succeeded: bool) -> bool:
    """Whether a refusal is about the run: 401/403/404, or a 400 that the first rows all got alike.

    A rerun with the fault fixed then does every row: none becomes a dead letter for it.
    """
    if code in RUN_WIDE_CODES:
        return True
    return code == 400 and not any_succeeded and same_400_rows >= RUN_WIDE_400_ROWS


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
) -> EnrichSummary:
    """Run ``engine`` to the end on a fresh event loop (the shared client drops that loop's pool after)."""

    async def main() -> EnrichSummary:
        await engine.hook.aprepare()
        engine.hook.forget_spent_day(engine.model)  # each run looks at the day's quota afresh
        return await engine.run(rows_factory(), done)

    with quiet_http_client_logs():
        return asyncio.run(main())


def reset_time(summary: EnrichSummary) -> datetime | None:
    """When the run's spent daily quota resets, from its summary (None if it was not spent)."""
    exhausted = summary.daily_quota_exhausted
    return datetime.fromisoformat(exhausted["reset_at"]).astimezone(timezone.utc) if exhausted else None
