"""The engine's one interface to the batch route: which rows flex may still take, and the jobs for the rest.

:class:`Routing` joins the pure boundary rules of ``routing`` (:class:`DeadlineRouter`) to the batch
route's jobs (``batch_route``). The engine asks it whether flex may take a row, tells it where flex
is, sends it rows flex gives up (a spent day), and awaits :meth:`Routing.finish`; it never touches
a checkpoint or a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_flex.enrichment.batch_route import BatchRoute, BatchRouteStats
from airflow_provider_flex.enrichment.routing import (
    DEADLINE_GRACE,
    DeadlineRouter,
    late_rows_outlook,
    quota_rate,
    rows_for_a_job,
)
from airflow_provider_flex.enrichment.summary import BatchJobsSeen
from airflow_provider_flex.exceptions import FlexError

if TYPE_CHECKING:
    from airflow_provider_flex.enrichment.request import EnrichRequest, RowsToDo
    from airflow_provider_flex.enrichment.store import OutputStore
    from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook

#: Seconds between two looks at whether flex can still finish its rows by the deadline (route="auto").
ROUTE_SECONDS = 2.0


@dataclass(frozen=True)
class FlexProgress:
    """Where flex is: the next input position it would take, its rate (rows/s, None: unknown), rows started."""

    next_position: int
    rows_per_s: float | None
    in_progress: int


class Routing:
    """The batch side of a run (``route`` ``"batch"`` or ``"auto"``): which rows flex keeps, and the jobs.

    With ``request.wait_for_batches`` :meth:`finish` polls until every job has ended (``deferrable=False``);
    otherwise it returns once flex is done and its jobs are created, for the task to defer.
    """

    def __init__(self, request: EnrichRequest, router: DeadlineRouter, batch: BatchRoute, log: Any) -> None:
        self.request = request
        self.router = router
        self.batch = batch
        self.log = log
        self._tasks: list[asyncio.Task[None]] = []
        #: Rows flex gave up before their call went (a spent day): they go to batch with the next move.
        self._given_back: list[str] = []
        self._late: asyncio.Task[None] | None = None
        #: Rows moved past flex's reach, too few for a job yet (see ``routing.MIN_BATCH_JOB_ROWS``).
        self._held: list[str] = []
        self._flex_stopped = False
        self._serve_on_flex: Callable[[list[str]], Awaitable[None]] | None = None

    # ---- what the engine asks

    def keys_in_batch(self) -> set[str]:
        """Return every row in a batch job (or about to be): flex must not take these."""
        return self.batch.keys()

    def flex_may_take(self, position: int) -> bool:
        """Return whether flex may still start the row at this input position."""
        return self.router.flex_may_take(position)

    def progress_note(self) -> str:
        """Return where the rows waiting in batch jobs are, for the progress line."""
        return self.batch.progress_note()

    # ---- the run

    def start(
        self, where_is_flex: Callable[[], FlexProgress], serve_on_flex: Callable[[list[str]], Awaitable[None]]
    ) -> None:
        """Send batch its first rows (all of them with ``route="batch"``) and start the job and deadline loops.

        ``serve_on_flex`` starts flex calls for rows of jobs the watchdog cancelled past their cutoff.
        """
        if self.router.route == "batch":
            self.batch.take(self.router.rows_from(0))
        else:  # decide before flex starts a row, when the rate is known
            self._move(where_is_flex())
        self._serve_on_flex = serve_on_flex
        self._late = asyncio.create_task(self._serve_late_rows())
        self._tasks = [asyncio.create_task(self.batch.run(until_done=False))]
        if self.router.route == "auto":
            self._tasks.append(asyncio.create_task(self._follow_deadline(where_is_flex)))

    def give_back(self, key: str) -> None:
        """Take back a row flex started but gave up before its call went (sent to batch with the next move)."""
        self._given_back.append(key)

    def send_rest_to_batch(self, position: int) -> None:
        """Send every row from ``position`` on to batch (the day's quota is spent, flex stops), held rows too."""
        if self.router.route == "auto":
            self._flex_stopped = True
            self._send(self.router.rows_from(position), small_too=True)

    async def finish(self) -> BatchRouteStats:
        """After flex: stop routing, let the job loop end its step, then wait for the jobs or leave them.

        Rows of jobs cancelled meanwhile are started on flex as they come; the engine awaits their calls.
        """
        for task in self._tasks[1:]:
            task.cancel()
        self._send([], small_too=self._flex_stopped)
        if self._held:  # too few for a job of their own: flex, free now, serves them
            self.batch.late_rows.put_nowait(self._held)
            self._held = []
        self.batch.request_stop()
        await self._tasks[0]
        if self.request.wait_for_batches:
            await self.batch.run(until_done=True)
        else:
            await self.batch.step()  # create what was sent last, so the deferral has jobs to watch
        while not self.batch.late_rows.empty():  # rows the last step handed back: flex starts them now
            await self._serve_on_flex(self.batch.late_rows.get_nowait())
        return self.batch.stats

    def jobs_seen(self) -> BatchJobsSeen:
        """Return the run's jobs for its summary: each with its state and ``batchStats``, those still running,
        those the watchdog cancelled, and when it next looks at one (a deferred task wakes then)."""
        stats = self.batch.stats
        return BatchJobsSeen(
            jobs=[{"name": name, "state": state, **stats.counts.get(name, {})} for name, state in stats.jobs.items()],
            waiting=self.batch.job_names(),
            late=dict(stats.late),
            cutoff=self.batch.next_cutoff(),
        )

    async def stop(self) -> None:
        """Cancel the loops (the run ended or failed); a job being created is not left half done."""
        tasks = [*self._tasks, *([self._late] if self._late is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _serve_late_rows(self) -> None:
        """Start flex calls for the rows of each job the watchdog cancelled, as soon as they are handed back."""
        while True:
            await self._serve_on_flex(await self.batch.late_rows.get())

    @property
    def pending_rows(self) -> int:
        """Return the rows waiting in batch jobs."""
        return self.batch.pending_rows

    def job_names(self) -> list[str]:
        """Return the names of the jobs created and not yet collected."""
        return self.batch.job_names()

    async def _follow_deadline(self, where_is_flex: Callable[[], FlexProgress]) -> None:
        """Send batch, every few seconds, the rows flex can no longer finish by the deadline."""
        while True:
            self._move(where_is_flex())
            await asyncio.sleep(ROUTE_SECONDS)

    def _move(self, flex: FlexProgress) -> None:
        self._send(self.router.move(flex.next_position, flex.rows_per_s, in_progress=flex.in_progress))

    def _send(self, keys: list[str], *, small_too: bool = False) -> None:
        """Hand ``keys`` (with rows given back and rows held) to batch, or hold them while too few for a job
        (see ``routing.rows_for_a_job``)."""
        keys, self._held = rows_for_a_job(self._held, keys + self._given_back, small_too=small_too)
        self._given_back = []
        if keys:
            self.log.info("Routing %d rows to the Batch API (flex cannot finish them by the deadline).", len(keys))
            self.batch.take(keys)


def start_routing(
    request: EnrichRequest, *, hook: GeminiFlexHook, store: OutputStore, rows: RowsToDo, done: Collection[str], log: Any
) -> Routing:
    """Return the run's routing: the model checked for batch support, an earlier run's jobs taken up,
    and the rows still to do split between flex and batch.

    Raises FlexError before any call or job when the model has no batch support.
    """
    model = request.model_id.removeprefix("models/")
    if not hook.batches.supports_batch(model):
        raise FlexError(
            f"{request.task}: model {model!r} does not take batch jobs (batchGenerateContent is not among its "
            "supported actions); use route='flex' or a model with batch support"
        )
    batch = BatchRoute(request, batches=hook.batches, store=store, max_attempts=hook.retry_policy.max_attempts, log=log)
    batch.resume(done)
    rows.without(batch.keys())
    router = DeadlineRouter(rows.positions, rows.keys, route=request.route, deadline=request.deadline)
    if request.route == "auto" and request.deadline is not None:
        rate = quota_rate(hook.quota_limiter(model).known_limits(), None)
        check_deadline(request, len(rows.keys), rate, expected_turnaround(request, store), log)
    return Routing(request, router, batch, log)


def expected_turnaround(request: EnrichRequest, store: OutputStore) -> float:
    """Return the seconds a batch job is expected to take: the median of this output's finished jobs, else
    ``batch_turnaround`` (default 24 hours, the Batch API's target)."""
    seen = store.batch_turnarounds()
    return statistics.median(seen) if seen else request.batch_turnaround.total_seconds()


def check_deadline(request: EnrichRequest, rows: int, rows_per_s: float | None, turnaround_s: float, log: Any) -> None:
    """Say before the first call when ``finish_by`` cannot be met (how many rows late, by about how much);
    with ``on_unreachable_deadline="fail"`` fail instead."""
    assert request.deadline is not None
    seconds_left = (request.deadline - datetime.now(timezone.utc)).total_seconds()
    outlook = late_rows_outlook(rows, rows_per_s, seconds_left, turnaround_s)
    if outlook is None:
        return
    late, late_by = outlook
    message = (
        f"{request.task}: finish_by {request.deadline.isoformat(timespec='seconds')} cannot be met: flex reaches "
        f"{rows - late} of {rows} rows by then at {rows_per_s:.2f} rows/s, and a batch job is expected to take "
        f"{turnaround_s / 3600:.1f} h; {late} rows will be about {late_by:.0f}s late (their jobs are cancelled "
        f"{DEADLINE_GRACE.total_seconds():.0f}s past finish_by and flex serves them)"
    )
    if request.on_unreachable_deadline == "fail":
        raise FlexError(message + "; no call was made (on_unreachable_deadline='fail').")
    log.warning("%s.", message)
