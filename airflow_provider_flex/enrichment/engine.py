"""The enrichment engine: many flex calls on one event loop, at the rate the quotas allow.

Every call goes through the hook: its retry policy, and the process's quota limiter
for (connection, model), which paces starts to configured or learned quotas. The
engine's pacer (``pacing``) decides how many calls run at once and how far a
row's backoff grows. A per-day quota running out stops the run cleanly: no new
call starts, calls in flight finish, results are checkpointed, and rows not yet
answered are left for a rerun (neither results nor dead letters). With a route
other than ``flex``, the engine asks :class:`~airflow_provider_flex.enrichment.deadline_routing.Routing`
which rows are still flex's, and nothing else about batch jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Collection, Iterator
from typing import Any

from airflow_provider_flex.enrichment.context_cache import RunCache
from airflow_provider_flex.enrichment.deadline_routing import FlexProgress, Routing
from airflow_provider_flex.enrichment.failures import DeadLetters, dead_letter
from airflow_provider_flex.enrichment.media import RowMedia
from airflow_provider_flex.enrichment.pacing import EnrichmentPacer
from airflow_provider_flex.enrichment.progress import describe_pacing, log_progress
from airflow_provider_flex.enrichment.records import row_key
from airflow_provider_flex.enrichment.request import EnrichRequest
from airflow_provider_flex.enrichment.routing import measured_rate, quota_rate
from airflow_provider_flex.enrichment.store import OutputStore, OutputTotals, result_record
from airflow_provider_flex.enrichment.summary import EnrichStats, EnrichSummary
from airflow_provider_flex.exceptions import FlexError, FlexQuotaExhausted, FlexRequestError, FlexResponseError
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.hooks.results import json_safe

CHECKPOINT_ROWS = 200
CHECKPOINT_SECONDS = 5.0
#: How often a run looks whether the process that started it (Airflow's task supervisor) is still there.
SUPERVISOR_CHECK_SECONDS = 0.5
PROGRESS_SECONDS = 5.0
#: Rows in progress (calling, or sitting out a retry backoff) per allowed call in flight.
ROWS_PER_CALL_SLOT = 8
#: Refusals about the run, not the row: a key that is missing or not valid, or a model that does not exist.
RUN_WIDE_CODES = frozenset({401, 403, 404})
#: A 400 with one message from this many rows, before any row succeeded, is taken to be about the run.
RUN_WIDE_400_ROWS = 3


class Enrichment:
    """One enrichment run over rows that passed validation.

    ``hook`` must have been built with ``pacer`` (``GeminiFlexHook(..., pacer=pacer)``),
    so that every API attempt takes one of the pacer's call slots.
    """

    def __init__(
        self,
        request: EnrichRequest,
        *,
        hook: GeminiFlexHook,
        pacer: EnrichmentPacer,
        store: OutputStore,
        log: Any,
        total: int = 0,
        earlier: OutputTotals | None = None,
        routing: Routing | None = None,
        media: RowMedia | None = None,
        context_cache: RunCache | None = None,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        if hook.pacer is not pacer:
            raise ValueError("the hook must be built with the engine's pacer: GeminiFlexHook(..., pacer=pacer)")
        self.request = request
        self.hook = hook
        self.pacer = pacer
        self.store = store
        self.log = log
        self.routing = routing
        self.media = media
        self.context_cache = context_cache
        self.earlier = earlier or OutputTotals()
        self.model = request.model
        #: Dead letters of this run: rows set aside by the checking pass first (no call made for them).
        self._failed = dead_letters if dead_letters is not None else DeadLetters()
        self.stats = EnrichStats(total=total, failed=len(self._failed))
        self._next_position = 0
        #: Keys of the rows refused with each 400 message before any row succeeded (a run-wide 400 shows here).
        self._early_400s: dict[str, list[str]] = {}
        self._pending_results: list[dict[str, Any]] = []
        self._last_checkpoint = time.monotonic()
        self._rows_in_progress = 0
        self._parent_pid = os.getppid()
        self._row_tasks: set[asyncio.Task[None]] = set()
        # Routing by deadline decides on rows not yet started, so flex starts no more than it can call at once.
        self._row_slots = asyncio.Semaphore(pacer.limit.maximum * (1 if routing is not None else ROWS_PER_CALL_SLOT))
        pacer.watch_quota(hook.quota_limiter(self.model))

    async def run(self, rows: Iterator[tuple[int, dict[str, Any]]], done_keys: Collection[str]) -> EnrichSummary:
        """Enrich every row not in ``done_keys`` (nor in a batch job); return the finished summary."""
        watchers = [asyncio.create_task(self._report_progress()), asyncio.create_task(self._watch_supervisor())]
        if self.context_cache is not None:  # found or made before the first row; deleted in the finally below
            await asyncio.to_thread(self.context_cache.open)
            watchers.append(asyncio.create_task(self.context_cache.keep_alive()))
        in_batch = set()
        if self.routing is not None:
            in_batch = self.routing.keys_in_batch()
            self.routing.start(self._flex_progress, self._serve_late)
        try:
            await self._start_rows(rows, done_keys, in_batch)
            while self._row_tasks:
                await asyncio.wait(set(self._row_tasks))
            if self.routing is not None:
                batch = await self.routing.finish()
                while self._row_tasks:  # rows of jobs the watchdog cancelled, served on flex
                    await asyncio.wait(set(self._row_tasks))
                self.stats.in_batch = self.routing.pending_rows
                self.stats.add_batch(batch.answered, batch.unusable, len(batch.dead_letters))
                self._failed.extend(batch.dead_letters)
        finally:
            for task in watchers:  # a progress line the log could not take (its supervisor gone) ends here
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self.routing is not None:
                await self.routing.stop()
            if self.media is not None:
                await self.media.delete_uploads()
            if self.context_cache is not None:
                self.stats.cache_storage_usd = await asyncio.to_thread(self.context_cache.close)
        self._checkpoint(force=True)
        self.store.write_failed(self._failed)
        self._log_progress()
        return self.summary()

    async def _start_rows(
        self, rows: Iterator[tuple[int, dict[str, Any]]], done: Collection[str], in_batch: set[str]
    ) -> None:
        """Start a task per row still to do, as call slots free up, until the rows end or the run must stop."""
        for position, (number, row) in enumerate(rows):
            self._next_position = position
            key = row_key(row, self.request.key_field, number)
            if key in done or key in in_batch:
                self.stats.skipped += key in done
                continue
            if not self._may_start(position):
                return
            await self._row_slots.acquire()
            if not self._may_start(position):
                self._row_slots.release()
                return
            if self._over_budget():
                self._row_slots.release()
                self.stats.stopped_by_cost_cap = True
                return
            self._launch(key, number, row)
        self._next_position += 1

    async def _serve_late(self, keys: list[str]) -> None:
        """Start flex calls for ``keys``: rows of a batch job cancelled past its cutoff (from a fresh pass)."""
        wanted = set(keys)
        self.log.info("Serving %d rows of a late batch job on flex.", len(wanted))
        for number, row in self.request.rows():
            key = row_key(row, self.request.key_field, number)
            if key not in wanted:
                continue
            await self._row_slots.acquire()
            if self._stopped():
                self._row_slots.release()  # left for a rerun: no result, no checkpoint
                return
            self._launch(key, number, row)

    def _launch(self, key: str, number: int, row: dict[str, Any]) -> None:
        """Start the row's task (its call slot already taken); the task frees the slot when it ends."""
        self._rows_in_progress += 1
        task = asyncio.create_task(self._enrich(key, number, row))
        self._row_tasks.add(task)
        task.add_done_callback(self._row_tasks.discard)

    def _stopped(self) -> bool:
        """Return whether the run starts no new row: a spent day, a refused run, or its supervisor gone."""
        stats = self.stats
        return stats.quota_exhausted is not None or stats.run_refused is not None or stats.orphaned

    def _may_start(self, position: int) -> bool:
        """Return whether the row at ``position`` may start: the run goes on, and the row is still flex's."""
        if self._stopped():
            return False
        return self.routing is None or self.routing.flex_may_take(position)

    def _over_budget(self) -> bool:
        """Return whether what was spent, plus what the rows in flight will cost, reaches ``max_cost_usd``."""
        cap = self.request.max_cost_usd
        if cap is None:
            return False
        done = self.stats.succeeded
        expected_in_flight = self._rows_in_progress * (self.stats.cost_usd / done) if done else 0.0
        return self.stats.cost_usd + expected_in_flight >= cap

    def summary(self) -> EnrichSummary:
        """Return the run's summary as it stands (finished once :meth:`run` returned)."""
        return self.stats.summary(
            self.request,
            self.pacer.counts(),
            dead_letters=self._failed,
            earlier=self.earlier,
            jobs=self.routing.jobs_seen() if self.routing is not None else None,
            context_cache=self.context_cache.to_dict() if self.context_cache is not None else None,
        )

    def _flex_progress(self) -> FlexProgress:
        return FlexProgress(self._next_position, self.flex_rate(), self._rows_in_progress)

    def flex_rate(self) -> float | None:
        """Return the rows per second flex can sustain: from the known quotas, else as measured so far."""
        flex = self.stats.flex
        per_row = flex.tokens.input_tokens / flex.rows if flex.rows else None
        known = quota_rate(self.hook.quota_limiter(self.model).known_limits(), per_row)
        if known is not None:
            return known
        return measured_rate(flex.rows, time.monotonic() - self.stats.started)

    async def _enrich(self, key: str, number: int, row: dict[str, Any]) -> None:
        request = self.request
        try:
            prompt = request.template.render(row, number=number, key=key)
            media = await self.media.for_row(row, number=number, key=key) if self.media else None
            response = await self._call(prompt, media)
            images = await asyncio.to_thread(self.store.write_images, key, response.images) if response.images else []
        except FlexQuotaExhausted as exc:
            self._stop_for_the_day(exc)  # the row is left for a rerun: neither a result nor a dead letter
        except FlexRequestError as exc:
            if self.stats.run_refused is None and not self._refuses_the_run(exc, key):
                self._record_failure(key, number, exc)
        except FlexResponseError as exc:
            if exc.paid is not None:  # an unusable answer was billed all the same
                self.stats.unusable.count(exc.paid)
            self._record_failure(key, number, exc)
        except Exception as exc:
            self._record_failure(key, number, exc)
        except asyncio.CancelledError:
            if self.routing is not None and self.stats.run_refused is None:  # a spent day: the row goes to batch
                self.routing.give_back(key)
            raise
        else:
            self.pacer.on_success()
            self.stats.flex.count(response)
            if response.service_tier != "flex":
                self.stats.standard_tier_calls += 1
            record = result_record(key, response, "flex", images)
            if request.include_prompt:
                record["prompt"] = prompt if isinstance(prompt, str) else json_safe(prompt)
            self._pending_results.append(record)
        finally:
            self._rows_in_progress -= 1
            self._row_slots.release()
        self._checkpoint()

    async def _call(self, prompt: Any, media: Any) -> Any:
        """Return a row's answer: naming the run's context cache while it lives, else with the shared part first."""
        request, cache = self.request, self.context_cache
        while True:
            name = cache.name if cache is not None else None
            contents = prompt if name else request.row_contents(prompt)
            config = cache.row_config(request.config) if cache is not None and name else request.config
            try:
                return await self.hook.agenerate_content(
                    contents=contents, model=self.model, config=config, service_tier=request.service_tier, media=media
                )
            except FlexRequestError as exc:
                if name is None or cache is None or not cache.forget(exc):
                    raise

    def _stop_for_the_day(self, exc: FlexQuotaExhausted) -> None:
        """Start no new call after a per-day 429: rows not in a call stop now, calls in flight finish."""
        if self.stats.quota_exhausted is None:
            self.stats.quota_exhausted = exc
            if self.routing is not None and self.routing.router.route == "auto":
                self.log.warning("%s Flex stops; calls in flight finish, the rest go to the Batch API.", exc)
                self.routing.send_rest_to_batch(self._next_position)
            else:
                self.log.warning("%s Stopping: calls in flight finish, the rest are left for a rerun.", exc)
        self._cancel_rows_not_in_call()

    def _refuses_the_run(self, exc: FlexRequestError, key: str) -> bool:
        """Return whether the API refused the run rather than this row; if so, stop it (see ``refuses_the_run``)."""
        alike = self._early_400s.setdefault(exc.message, [])
        if exc.code == 400 and not self.stats.succeeded:
            alike.append(key)
        if not refuses_the_run(exc.code, same_400_rows=len(alike), any_succeeded=bool(self.stats.succeeded)):
            return False
        self.stats.run_refused = exc
        self.stats.failed -= self._failed.withdraw(alike)  # the earlier rows with this 400 are no dead letters
        self.log.error("%s Stopping the run: calls in flight finish; no row is a dead letter for it.", exc)
        self._cancel_rows_not_in_call()
        return True

    def _cancel_rows_not_in_call(self) -> None:
        """Stop every other row whose request has not gone (waiting for a slot, a quota turn or a backoff)."""
        current = asyncio.current_task()
        for task in list(self._row_tasks):
            if task is not current and task not in self.pacer.requests_sent:
                task.cancel()

    def _record_failure(self, key: str, number: int, exc: Exception) -> None:
        """Count the row as failed and keep its dead letter (the reason, and what an unusable answer cost)."""
        if not isinstance(exc, FlexError | ValueError | TypeError):
            self.log.exception("Row %d (key %s) failed unexpectedly", number, key)
        self.stats.failed += 1
        self._failed.add(dead_letter(key, number, exc))

    def _checkpoint(self, *, force: bool = False) -> None:
        """Write the answers gathered so far, every few hundred rows or seconds (``force``: now)."""
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
        """Log a progress line every few seconds, whether or not rows finish (they may all sit in backoffs)."""
        while True:
            await asyncio.sleep(PROGRESS_SECONDS)
            self._checkpoint()
            self._log_progress()

    def pacing_note(self) -> str:
        """Return what holds the run back right now, in words: a quota being paced to, a server pause, a spent day."""
        batch_note = self.routing.progress_note() if self.routing is not None else ""
        return describe_pacing(self.stats.quota_exhausted, self.hook.quota_limiter(self.model), self.pacer) + batch_note

    def _log_progress(self) -> None:
        landed = self.routing.batch.landed_rows if self.routing is not None and not self.stats.batch.rows else 0
        log_progress(self.log, self.stats, self.pacer, self.pacing_note(), batch_landed=landed)


def refuses_the_run(code: int | None, *, same_400_rows: int, any_succeeded: bool) -> bool:
    """Return whether a refusal is about the run: 401/403/404, or a 400 that the first rows all got alike.

    A rerun with the fault fixed then does every row: none becomes a dead letter for it.
    """
    if code in RUN_WIDE_CODES:
        return True
    return code == 400 and not any_succeeded and same_400_rows >= RUN_WIDE_400_ROWS
