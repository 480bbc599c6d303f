"""What a task does once an enrichment run returned: finish, defer for batch jobs, wait for the quota day, or fail.

A pure function of the run's summary and its request, testable without Airflow (as the Anthropic
provider's ``evaluate_batch_counts`` is): the operator only carries out :class:`NextStep`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from airflow_provider_flex.exceptions import FlexError

if TYPE_CHECKING:
    from airflow_provider_flex.enrichment.request import EnrichRequest
    from airflow_provider_flex.enrichment.summary import EnrichSummary

FINISH, DEFER_FOR_BATCHES, WAIT_FOR_QUOTA_RESET, FAIL = "finish", "defer_for_batches", "wait_for_quota_reset", "fail"


@dataclass(frozen=True)
class NextStep:
    """What the task does next, and the lines it logs first (``(level, message)``, in order).

    ``error`` is raised with ``FAIL``; ``record_spend`` says whether the spend view should count what the
    failed run spent (not when its supervisor is gone: nothing can be pushed then). ``reset_at`` is when a
    spent day resets (``WAIT_FOR_QUOTA_RESET``).
    """

    action: str
    log_lines: tuple[tuple[int, str], ...] = ()
    error: BaseException | None = None
    record_spend: bool = True
    reset_at: datetime | None = None


def next_step(summary: EnrichSummary, request: EnrichRequest) -> NextStep:
    """Return what the task does with a finished run's summary (the order of the checks is the order of blame)."""
    if summary.supervisor_gone:  # no supervisor to push XComs to: say it in the log and stop
        error = FlexError(
            f"{request.task}: its supervisor went away mid-run; {summary.succeeded} rows answered are "
            f"checkpointed in {request.output_path}, and Airflow's retry resumes from there."
        )
        return NextStep(FAIL, error=error, record_spend=False)
    if summary.run_refused is not None:
        line = (
            f"The API refused the run: {summary.run_refused}. Results so far are in {request.output_path}; fix the "
            "cause and rerun: every row not answered is done then."
        )
        return NextStep(FAIL, ((logging.ERROR, line),), error=summary.run_refused)
    if request.route != "flex" and summary.in_batch:
        line = f"Waiting for {summary.in_batch} rows in batch jobs {', '.join(summary.waiting_jobs)}."
        return NextStep(DEFER_FOR_BATCHES, ((logging.INFO, line),))
    lines: tuple[tuple[int, str], ...] = ((logging.INFO, summary.describe()),)
    exhausted = summary.quota_exhausted
    if exhausted is not None and request.route == "flex":
        lines += (
            (
                logging.WARNING,
                f"Daily quota spent: {summary.succeeded + summary.failed} rows done this run, {summary.not_started} "
                f"left for after the reset; results are in {request.output_path}.",
            ),
        )
        if request.on_daily_quota == "wait":
            return NextStep(WAIT_FOR_QUOTA_RESET, lines, reset_at=reset_time(summary) or exhausted.reset_at)
        return NextStep(FAIL, lines, error=exhausted)
    failure = summary.failure(request.max_failed_fraction, request.max_cost_usd)
    if failure is not None:
        return NextStep(FAIL, lines, error=failure)
    return NextStep(FINISH, lines)


def reset_time(summary: EnrichSummary) -> datetime | None:
    """Return when the run's spent daily quota resets, from its summary (None if it was not spent)."""
    exhausted = summary.daily_quota_exhausted
    return datetime.fromisoformat(exhausted["reset_at"]).astimezone(timezone.utc) if exhausted else None
