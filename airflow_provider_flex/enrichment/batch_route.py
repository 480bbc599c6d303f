"""The enrichment's batch route: rows handed to Gemini Batch API jobs, crash-safe and resumable.

Creating a batch job is not idempotent, so every job is checkpointed before it exists:
``batch-<id>.json`` under ``output_path`` holds its rows' keys, their attempts so far and a
display name derived from the output location. A rerun (or the task's retry, or the resume
after a deferral) reads these checkpoints: a job whose name was recorded is re-attached; one
whose name was not (a crash between create and the second write) is looked for by its display
name, and only created if it is not there. Each row is in one checkpoint at most, so no row is
answered on both routes.

When a job ends, its answers are written to the output store like flex's (``route: "batch"``)
before its checkpoint is removed; failed lines, unmatched answers and the rows of a FAILED,
EXPIRED or CANCELLED job go into a new checkpoint for a later job, until the retry policy's
attempts are spent, and then become dead letters with their reason. A 429 on create (the
model's enqueued-token quota) splits the job, or waits and tries again: rows are never dropped.

Blocking SDK calls run in threads; everything else runs on the engine's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_flex.enrichment.batch_checkpoint import BatchCheckpoint, display_name_for
from airflow_provider_flex.enrichment.records import row_key
from airflow_provider_flex.enrichment.routing import job_cutoff
from airflow_provider_flex.enrichment.store import OutputStore, result_record
from airflow_provider_flex.enrichment.summary import RouteFigures
from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.hooks.batch import BatchEnqueueRefused, BatchRequest, FlexBatches
from airflow_provider_flex.hooks.schema import AnswerSchema
from airflow_provider_flex.hooks.tracing import record_batch_job_event

if TYPE_CHECKING:
    from airflow_provider_flex.enrichment.request import EnrichRequest

#: Rows in one batch job at most (a large tail sent to batch becomes several jobs).
MAX_ROWS_PER_JOB = 20_000
#: A job refused with 429 is split in halves down to this many rows; smaller ones wait and try again.
MIN_SPLIT_ROWS = 50


@dataclass
class BatchRouteStats:
    """What the batch route did in this run; the engine's summary adds it to flex's."""

    answered: RouteFigures = field(default_factory=RouteFigures)
    #: Answers that came back unusable (off-schema, cut, blocked): paid for, so counted in the spend.
    unusable: RouteFigures = field(default_factory=RouteFigures)
    jobs: dict[str, str] = field(default_factory=dict)  # job name -> last known state
    #: job name -> the API's last ``batchStats`` (pending, successful, failed requests)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Rows given up on after the retry policy's attempts: dead-letter records for ``failed-*.jsonl``.
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    #: Jobs the watchdog cancelled past their cutoff, and the rows each held (served on flex instead).
    late: dict[str, int] = field(default_factory=dict)


class BatchRoute:
    """Hands rows to batch jobs and brings their answers back into the output store."""

    def __init__(
        self, request: EnrichRequest, *, batches: FlexBatches, store: OutputStore, max_attempts: int, log: Any
    ) -> None:
        self.request = request
        self.batches = batches
        self.store = store
        self.model = request.model_id.removeprefix("models/")
        self.answer_schema = AnswerSchema.of_config(request.config)
        self.max_attempts = max_attempts
        self.log = log
        self.checkpoints: dict[str, BatchCheckpoint] = {}
        self.stats = BatchRouteStats()
        self._wake = asyncio.Event()
        self._stopping = False
        #: Rows of jobs cancelled past their cutoff, for flex to serve (see ``deadline_routing``).
        self.late_rows: asyncio.Queue[list[str]] = asyncio.Queue()
        #: Inline answers came back without their keys: later jobs go as keyed JSONL files.
        self._as_file = False

    def request_stop(self) -> None:
        """Let :meth:`run` return after the step it is in (never in the middle of creating a job)."""
        self._stopping = True
        self._wake.set()

    # ---- what the engine asks

    def keys(self) -> set[str]:
        """Return every row that is in a batch job (or about to be): flex must not take these."""
        return {key for checkpoint in self.checkpoints.values() for key in checkpoint.attempts}

    @property
    def pending_rows(self) -> int:
        return sum(len(checkpoint.attempts) for checkpoint in self.checkpoints.values())

    def job_names(self) -> list[str]:
        return [c.job_name for c in self.checkpoints.values() if c.job_name]

    def progress_note(self) -> str:
        """Return where the rows waiting in batch jobs are, for the progress line."""
        if not self.checkpoints:
            return ""
        return "; batch: " + ", ".join(self._describe(c) for c in self.checkpoints.values())

    def _describe(self, checkpoint: BatchCheckpoint) -> str:
        """Return one job's rows, state, age and the API's counts, in words."""
        age = max(0.0, time.time() - checkpoint.created)
        counts = self.stats.counts.get(checkpoint.job_name or "", {})
        shown = ", ".join(f"{name} {counts[name]}" for name in ("pending", "successful", "failed") if name in counts)
        return (f"{len(checkpoint.attempts)} in {checkpoint.job_name or 'a job being created'} "
                f"({checkpoint.state}, {age:.0f}s{', ' + shown if shown else ''})")  # fmt: skip

    @property
    def landed_rows(self) -> int:
        """Return the rows batch jobs answered (or gave up on) so far in this run."""
        return self.stats.answered.rows + len(self.stats.dead_letters)

    # ---- taking rows, and resuming

    def resume(self, done: Collection[str]) -> None:
        """Take up the checkpoints an earlier run (or try) left under the output path.

        A crash can leave a row both answered and in a checkpoint (answers written, checkpoint
        not yet removed), or in two checkpoints (a job's retries written, the job's own not yet
        removed): an answered row is dropped from every checkpoint, and a row in two stays only
        in the newer, so no row is answered twice.
        """
        newest: dict[str, str] = {}
        checkpoints = [BatchCheckpoint.from_json(data) for data in self.store.batch_checkpoints()]
        for checkpoint in checkpoints:  # oldest first: the newest checkpoint of a key wins
            for key in checkpoint.attempts:
                newest[key] = checkpoint.id
        for checkpoint in checkpoints:
            kept = {k: n for k, n in checkpoint.attempts.items() if k not in done and newest[k] == checkpoint.id}
            if kept != checkpoint.attempts:
                checkpoint.attempts = kept
                self._save(checkpoint)
            self.checkpoints[checkpoint.id] = checkpoint
        if self.checkpoints:
            self.log.info(
                "Batch route: taking up %d job(s) with %d rows from an earlier run.",
                len(self.checkpoints),
                self.pending_rows,
            )

    def take(self, keys: Iterable[str], attempts: dict[str, int] | None = None) -> None:
        """Checkpoint ``keys`` as new jobs (before any is created) and wake the submitter."""
        keys = list(keys)
        for start in range(0, len(keys), MAX_ROWS_PER_JOB):
            chunk = keys[start : start + MAX_ROWS_PER_JOB]
            self._new_checkpoint({key: (attempts or {}).get(key, 0) for key in chunk})
        self._wake.set()

    def _new_checkpoint(self, attempts: dict[str, int], reasons: dict[str, str] | None = None) -> BatchCheckpoint:
        checkpoint_id = uuid.uuid4().hex[:12]
        checkpoint = BatchCheckpoint(
            id=checkpoint_id,
            display_name=display_name_for(self.store.output_path, checkpoint_id),
            model=self.model,
            attempts=attempts,
            reasons=dict(reasons or {}),
        )
        self.store.write_batch_checkpoint(checkpoint.to_json())
        self.checkpoints[checkpoint.id] = checkpoint
        return checkpoint

    def _save(self, checkpoint: BatchCheckpoint) -> None:
        self.store.write_batch_checkpoint(checkpoint.to_json())

    def _drop(self, checkpoint: BatchCheckpoint) -> None:
        self.store.remove_batch_checkpoint(checkpoint.id)
        self.checkpoints.pop(checkpoint.id, None)

    # ---- the loop

    async def run(self, *, until_done: bool) -> None:
        """Submit, follow and collect jobs; return when none is left (``until_done``) or when cancelled."""
        while True:
            await self.step()
            if (until_done and not self.checkpoints) or (not until_done and self._stopping):
                return
            self._wake.clear()
            wait = self.request.batch_poll_interval
            cutoff = self.next_cutoff()
            if cutoff is not None:  # look again at the cutoff, not a poll interval after it
                wait = min(wait, max(0.05, (cutoff - datetime.now(timezone.utc)).total_seconds()))
            with contextlib.suppress(asyncio.TimeoutError):  # not the builtin on Python 3.10
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    def cutoff(self, checkpoint: BatchCheckpoint) -> datetime:
        """Return when the watchdog cancels ``checkpoint``'s job if it has not ended (see ``routing.job_cutoff``)."""
        return job_cutoff(
            route=self.request.route,
            deadline=self.request.deadline,
            created=datetime.fromtimestamp(checkpoint.created, timezone.utc),
            max_wait=self.request.batch_max_wait,
        )

    def next_cutoff(self) -> datetime | None:
        """Return the earliest cutoff of the jobs created and not yet ended (None: no such job)."""
        return min((self.cutoff(c) for c in self.checkpoints.values() if c.job_name), default=None)

    async def step(self) -> None:
        """Make one pass: create the jobs not yet created, look at the others, collect those that ended."""
        for checkpoint in list(self.checkpoints.values()):
            if not checkpoint.attempts:  # every row answered before a crash: only the bookkeeping is left
                self._drop(checkpoint)
                if checkpoint.job_name:
                    await asyncio.to_thread(self.batches.delete, checkpoint.job_name, checkpoint.input_file)
            elif checkpoint.job_name is None:
                await self._submit(checkpoint)
            else:
                await self._follow(checkpoint)

    async def _submit(self, checkpoint: BatchCheckpoint) -> None:
        found = await asyncio.to_thread(self.batches.find, checkpoint.display_name)
        if found is not None:  # created before a crash hid its name: re-attach, never create twice
            self.log.info("Batch route: found job %s for checkpoint %s; re-attaching.", found.name, checkpoint.id)
            checkpoint.job_name, checkpoint.state = found.name, found.state
            self._save(checkpoint)
            return
        requests = await asyncio.to_thread(self._requests, set(checkpoint.attempts))
        try:
            job = await asyncio.to_thread(
                self.batches.submit,
                self.model,
                requests,
                config=self.request.config,
                display_name=checkpoint.display_name,
                as_file=self._as_file,
            )
        except BatchEnqueueRefused as refused:
            self._split_or_wait(checkpoint, refused)
            return
        except FlexError as unavailable:
            self.log.warning("Batch route: could not create a job now (%s); trying again.", unavailable)
            return
        checkpoint.job_name, checkpoint.input_file, checkpoint.state = job.name, job.input_file, job.state
        self._save(checkpoint)
        self.stats.jobs[job.name] = job.state
        self.log.info("Batch route: job %s created with %d rows.", job.name, len(checkpoint.attempts))

    def _split_or_wait(self, checkpoint: BatchCheckpoint, refused: Exception) -> None:
        rows = len(checkpoint.attempts)
        if rows < 2 * MIN_SPLIT_ROWS:
            self.log.warning("Batch route: %s; %d rows wait and try again.", refused, rows)
            return
        keys = checkpoint.keys
        half = rows // 2
        self.log.warning("Batch route: %s; splitting a job of %d rows in two.", refused, rows)
        for part in (keys[:half], keys[half:]):
            self._new_checkpoint({key: checkpoint.attempts[key] for key in part}, checkpoint.reasons)
        self._drop(checkpoint)

    async def _follow(self, checkpoint: BatchCheckpoint) -> None:
        assert checkpoint.job_name is not None
        try:
            job = await asyncio.to_thread(self.batches.get, checkpoint.job_name)
        except FlexError as unavailable:
            self.log.warning("Batch route: could not look at job %s now (%s).", checkpoint.job_name, unavailable)
            return
        self.stats.jobs[job.name] = job.state
        if job.state != checkpoint.state or dict(job.counts) != self.stats.counts.get(job.name):
            record_batch_job_event(job.name, job.state, time.time() - checkpoint.created, job.counts)
        self.stats.counts[job.name] = dict(job.counts)
        if job.state != checkpoint.state:
            checkpoint.state = job.state
            self._save(checkpoint)
        if job.done and checkpoint.cancel_requested and job.state != "succeeded":
            await self._to_flex(checkpoint, job.state)
        elif job.done:  # a cancel that lost the race and succeeded is collected like any other
            await self._collect(checkpoint, job.state, job.error)
        elif not checkpoint.cancel_requested and datetime.now(timezone.utc) >= self.cutoff(checkpoint):
            await self._cancel_late(checkpoint)

    async def _cancel_late(self, checkpoint: BatchCheckpoint) -> None:
        """Cancel a job past its cutoff; its rows go to flex once it has ended (at once if it already has)."""
        assert checkpoint.job_name is not None
        try:
            await asyncio.to_thread(self.batches.cancel, checkpoint.job_name)
            job = await asyncio.to_thread(self.batches.get, checkpoint.job_name)
        except FlexError as unavailable:
            self.log.warning("Batch route: could not cancel late job %s now (%s).", checkpoint.job_name, unavailable)
            return
        checkpoint.cancel_requested, checkpoint.state = True, job.state
        self._save(checkpoint)
        self.stats.jobs[job.name] = job.state
        if job.done and job.state == "succeeded":
            await self._collect(checkpoint, job.state, job.error)
        elif job.done:
            await self._to_flex(checkpoint, job.state)

    async def _to_flex(self, checkpoint: BatchCheckpoint, state: str) -> None:
        """Hand a cancelled job's rows to flex (its answers, if any, are never read), then forget the job."""
        assert checkpoint.job_name is not None
        keys = list(checkpoint.attempts)
        self.stats.late[checkpoint.job_name] = len(keys)
        self.log.warning(
            "Batch route: job %s had not finished by its cutoff %s (%s); %d rows it held are served on flex.",
            checkpoint.job_name, self.cutoff(checkpoint).isoformat(timespec="seconds"), state, len(keys),
        )  # fmt: skip
        self._drop(checkpoint)  # out of batch before flex takes them: no row on both routes
        await asyncio.to_thread(self.batches.delete, checkpoint.job_name, checkpoint.input_file)
        self.late_rows.put_nowait(keys)

    async def _collect(self, checkpoint: BatchCheckpoint, state: str, error: str | None) -> None:
        """Write a finished job's answers, re-queue what it did not answer, then forget the job."""
        assert checkpoint.job_name is not None
        retry: dict[str, int] = {}
        latest: dict[str, str] = {}
        answered: set[str] = set()
        if state == "succeeded":
            await asyncio.to_thread(self.store.record_batch_turnaround, time.time() - checkpoint.created)
            results = await asyncio.to_thread(
                self.batches.results,
                checkpoint.job_name,
                model=self.model,
                wants_json=self.answer_schema is not None,
                attempts={key: tries + 1 for key, tries in checkpoint.attempts.items()},
                schema=self.answer_schema,
            )
            records = []
            for line in results.lines:
                if line.key not in checkpoint.attempts or line.key in answered:
                    continue
                if line.response is not None:
                    answered.add(line.key)
                    records.append(result_record(line.key, line.response, "batch"))
                    self.stats.answered.count(line.response)
                else:
                    latest[line.key] = line.error or "the batch line failed"
                    if line.paid is not None:
                        self.stats.unusable.count(line.paid)
            if records:
                await asyncio.to_thread(self.store.write_results, records)
            if results.unmatched:
                self._as_file = True
                self.log.warning(
                    "Batch route: job %s returned %d answers without their keys; those rows are done again, "
                    "and later jobs go as keyed JSONL files.",
                    checkpoint.job_name,
                    results.unmatched,
                )
            missing = "the batch job returned no answer for this row"
        else:
            missing = f"batch job {checkpoint.job_name} ended {state}" + (f": {error}" if error else "")
            self.log.warning("Batch route: %s; its %d rows are resubmitted.", missing, len(checkpoint.attempts))
        reasons: dict[str, str] = {}
        for key, tries in checkpoint.attempts.items():
            if key in answered:
                continue
            reasons[key] = latest.get(key, missing)
            if tries + 1 >= self.max_attempts:
                self.stats.dead_letters.append(
                    {"key": key, "row": None, "error": reasons[key], "error_type": "FlexBatchLineError"}
                )
            else:
                retry[key] = tries + 1
        if retry:
            self._new_checkpoint(retry, {key: reasons[key] for key in retry})
        self._drop(checkpoint)
        await asyncio.to_thread(self.batches.delete, checkpoint.job_name, checkpoint.input_file)

    def _requests(self, keys: set[str]) -> list[BatchRequest]:
        """Return the prompts of ``keys``, rendered from a fresh pass over the input (in input order)."""
        requests = []
        template = self.request.template
        for number, row in self.request.rows():
            key = row_key(row, self.request.key_field, number)
            if key in keys:
                prompt = template.render(row, number=number, key=key)
                requests.append(BatchRequest(key, self.request.row_contents(prompt)))  # never naming a cache
        return requests
