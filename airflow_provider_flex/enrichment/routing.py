"""Which rows flex serves and which go to the Batch API, by a deadline (``route="auto"``).

Flex and Batch cost the same (50% of standard). Flex answers in minutes but is bound by the
project's per-minute and per-day quotas; Batch has its own, far larger quota but answers
within 24 hours. So in ``auto`` flex keeps the rows it can still finish by ``finish_by`` at
the rate the quotas allow (known, learned, or measured), taking them from the head of the
input, and the rows beyond its reach (the tail) go into batch jobs as soon as that is
known, while flex keeps serving its share. Once handed over, a row never comes back: no
row is answered on both routes.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone

from airflow_provider_flex.compat import parse_datetime

ROUTES = ("flex", "batch", "auto")
#: The share of the quota rate flex is counted on to sustain (retries, shedding and the end of the run cost some).
RATE_SAFETY = 0.9
#: Seconds of flex calls measured before a measured rate is trusted (when no quota is known).
MEASURE_SECONDS = 10.0
MEASURE_ROWS = 20


def is_template(value: object) -> bool:
    """Return a value still to be rendered by Airflow (checked once rendered, not when the DAG is parsed)."""
    return isinstance(value, str) and "{{" in value


def as_finish_by(task_id: str, value: object) -> timedelta | datetime | None:
    """Return ``finish_by`` as given or rendered: a timedelta, an aware datetime, or seconds (a number or its text)."""
    if value is None or value == "" or isinstance(value, timedelta | datetime):
        return value or None  # type: ignore[return-value]
    try:
        return timedelta(seconds=float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        pass
    try:
        return parse_datetime(str(value))
    except ValueError:
        raise ValueError(
            f"Task {task_id!r}: finish_by must be a timedelta, an aware datetime or seconds, got {value!r}"
        ) from None


def positive_duration(task_id: str, name: str, value: timedelta | float) -> timedelta:
    """Return a duration argument (a timedelta or seconds) as a timedelta; ValueError naming it unless positive."""
    duration = value if isinstance(value, timedelta) else timedelta(seconds=float(value))
    if duration <= timedelta(0):
        raise ValueError(f"Task {task_id!r}: {name} must be positive, got {value!r}")
    return duration


def check_route(task_id: str, route: str, finish_by: timedelta | datetime | None) -> None:
    """Reject a route or deadline that cannot work (when the DAG is parsed, or once templates are rendered)."""
    if route not in ROUTES:
        raise ValueError(f"Task {task_id!r}: route must be one of {', '.join(ROUTES)}, got {route!r}")
    if route == "auto" and finish_by is None:
        raise ValueError(
            f"Task {task_id!r}: route='auto' needs finish_by (a timedelta from the task's start, or an aware "
            "datetime): the rows flex cannot finish by then go to the Batch API"
        )
    if isinstance(finish_by, timedelta) and finish_by <= timedelta(0):
        raise ValueError(f"Task {task_id!r}: finish_by must be a positive timedelta, got {finish_by}")
    if isinstance(finish_by, datetime) and finish_by.tzinfo is None:
        raise ValueError(f"Task {task_id!r}: finish_by must be an aware datetime (with a time zone), got {finish_by}")
    if finish_by is not None and not isinstance(finish_by, timedelta | datetime):
        raise ValueError(f"Task {task_id!r}: finish_by must be a timedelta or an aware datetime, got {finish_by!r}")


def deadline_of(task_id: str, finish_by: timedelta | datetime, started: datetime) -> datetime:
    """Return the absolute deadline; one already past is an error naming it."""
    deadline = started + finish_by if isinstance(finish_by, timedelta) else finish_by.astimezone(timezone.utc)
    if deadline <= datetime.now(timezone.utc):
        raise ValueError(f"Task {task_id!r}: finish_by {deadline.isoformat()} is in the past")
    return deadline


#: How long past ``finish_by`` an unfinished batch job may still end on its own before the watchdog cancels it.
DEADLINE_GRACE = timedelta(seconds=15)
#: How long a batch job may live with ``route="batch"`` (``batch_max_wait``'s default): the Batch API's
#: documented target turnaround. Users report jobs pending for more than 24 hours (python-genai #1482, #2221).
DEFAULT_BATCH_MAX_WAIT = timedelta(hours=24)


def job_cutoff(
    *, route: str, deadline: datetime | None, created: datetime, max_wait: timedelta, grace: timedelta = DEADLINE_GRACE
) -> datetime:
    """Return when a batch job still unfinished is cancelled and its rows are served on flex.

    With ``route="auto"``: ``finish_by`` plus a short grace (the rows were promised by then), or the job's
    ``max_wait`` if that comes first; with ``route="batch"``: its creation plus ``max_wait``.
    """
    by_age = created + max_wait
    if route == "auto" and deadline is not None:
        return min(deadline + grace, by_age)
    return by_age


#: The Batch API's target turnaround, assumed for planning until this output's own jobs have shown theirs.
DEFAULT_BATCH_TURNAROUND = timedelta(hours=24)
ON_UNREACHABLE_DEADLINE = ("warn", "fail")


def late_rows_outlook(
    rows: int, rows_per_s: float | None, seconds_left: float, turnaround_s: float
) -> tuple[int, float] | None:
    """Return (rows that will be late, about how late in seconds) for ``rows`` due in ``seconds_left``, or None.

    Flex reaches ``flex_reach`` of them; the rest wait for a batch job that takes ``turnaround_s``, or, when
    that is past the deadline, for the watchdog to cut the job at the deadline plus grace and flex to serve
    them. None when the rate is unknown (nothing to say yet) or every row can be on time.
    """
    if rows_per_s is None or rows_per_s <= 0:
        return None
    late = rows - flex_reach(seconds_left, rows_per_s)
    if late <= 0 or turnaround_s <= seconds_left:
        return None
    by_watchdog = DEADLINE_GRACE.total_seconds() + late / rows_per_s
    return late, min(turnaround_s - seconds_left, by_watchdog)


#: Fewer rows than this moved past flex's reach are held for the next move, not made a job of their own
#: (a job of a handful of rows waits as long as a large one); rows still held at the end are served on flex.
MIN_BATCH_JOB_ROWS = 50


def rows_for_a_job(held: list[str], moved: list[str], *, small_too: bool) -> tuple[list[str], list[str]]:
    """Return (rows to hand to batch now, rows to hold): ``held`` and ``moved`` together, held while fewer than
    :data:`MIN_BATCH_JOB_ROWS` unless ``small_too`` (flex has stopped: batch is their only way)."""
    rows = held + moved
    if rows and len(rows) < MIN_BATCH_JOB_ROWS and not small_too:
        return [], rows
    return rows, []


def quota_rate(limits: Mapping[str, tuple[int, str]], prompt_tokens_per_row: float | None) -> float | None:
    """Return rows per second the known per-minute quotas allow (requests, and input tokens per row), or None."""
    rates = []
    if "requests_per_minute" in limits:
        rates.append(limits["requests_per_minute"][0] / 60.0)
    if "tokens_per_minute" in limits and prompt_tokens_per_row:
        rates.append(limits["tokens_per_minute"][0] / 60.0 / prompt_tokens_per_row)
    return min(rates) if rates else None


def measured_rate(rows_done: int, seconds: float) -> float | None:
    """Return rows per second flex has served so far, once enough is seen to trust it."""
    if seconds < MEASURE_SECONDS and rows_done < MEASURE_ROWS:
        return None
    return rows_done / seconds if seconds > 0 else None


def flex_reach(seconds_left: float, rows_per_s: float) -> int:
    """Return how many rows flex can still finish in ``seconds_left`` at ``rows_per_s`` (less a safety margin)."""
    return max(0, math.floor(seconds_left * rows_per_s * RATE_SAFETY))


class DeadlineRouter:
    """The boundary between flex's rows and batch's, over the input's positions still to do.

    ``todo`` holds the input positions (0-based, in order) of rows that need an answer, ``keys``
    their keys; rows
    at positions at or past :attr:`boundary` belong to batch. The boundary only moves down.
    ``route="batch"`` sends everything to batch at once (``rows_from(0)``).
    """

    def __init__(self, todo: Sequence[int], keys: Sequence[str], *, route: str, deadline: datetime | None) -> None:
        self.todo = todo
        self.keys = keys
        self.route = route
        self.deadline = deadline
        self.boundary = todo[-1] + 1 if todo else 0

    def flex_may_take(self, position: int) -> bool:
        """Return whether the row at ``position`` is still flex's."""
        return position < self.boundary

    def move(
        self, next_position: int, rows_per_s: float | None, *, in_progress: int = 0, now: datetime | None = None
    ) -> list[str]:
        """Lower the boundary to what flex can reach by the deadline; return the keys of the rows now batch's.

        ``in_progress`` rows flex has started (calling, or waiting for their quota turn) count against its reach.
        """
        if self.route != "auto" or rows_per_s is None or self.deadline is None:
            return []
        seconds_left = (self.deadline - (now or datetime.now(timezone.utc))).total_seconds()
        if seconds_left <= 0:  # past the deadline a job would only be cut by the watchdog: flex serves the rest
            return []
        keep = max(0, flex_reach(seconds_left, rows_per_s) - in_progress)
        start = bisect.bisect_left(self.todo, next_position)
        end = bisect.bisect_left(self.todo, self.boundary)
        if end - start <= keep:
            return []
        cut = start + keep
        return self.rows_from(self.todo[cut])

    def rows_from(self, position: int) -> list[str]:
        """Move the boundary to ``position``: return the keys of every row from there on, now batch's."""
        low = bisect.bisect_left(self.todo, position)
        high = bisect.bisect_left(self.todo, self.boundary)
        self.boundary = min(self.boundary, position)
        return list(self.keys[low:high])
