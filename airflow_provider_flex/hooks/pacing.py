"""When a call may start: the start rules, each small, and the queue callers wait in.

Every rule answers two questions, as tenacity's ``wait`` and ``stop`` strategies do: how long a
start must wait (:meth:`StartRule.wait_before_start`), and what an outcome teaches it
(:meth:`StartRule.record_outcome`). Rules combine with ``&`` (a start waits for the longest).

- :class:`ServerPause`: no start before a pause the server asked for (``RetryInfo``, ``Retry-After``).
- :class:`LearnedRate`: after 429s that name no quota limit, starts spaced evenly at a rate cut on
  each such 429 and grown back between them (the quota windows of a known or learned limit are
  :class:`~airflow_provider_flex.hooks.quota.QuotaLimiter`'s, shared in the process or through Redis).
- :class:`ConcurrencyLimit`: how many calls may be in flight, grown by successes.
- :class:`TurnQueue`: the one way a caller waits for its turn, woken in arrival order; the
  enrichment's call slots and :class:`StartGate` (one start per pass of an event loop) both use it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_provider_flex.process_state import PROCESS

if TYPE_CHECKING:
    from airflow_provider_flex.hooks.retry import Failure

#: The window over which starts are counted to find the rate that drew a 429.
RATE_WINDOW_S = 1.0
#: A 429 that names no quota limit sets the start rate to this fraction of the rate that drew it (the ceiling)...
RATE_DECREASE = 0.9
#: ...from which it grows back along a cubic curve, as TCP CUBIC's window does after a loss (RFC 9438): quickly at
#: first, flat near RATE_PLATEAU of the ceiling this many seconds after the cut, then faster and faster past it.
#: So the rate stays just under the rate that was refused instead of bouncing off it, probes above it rarely,
#: and still finds a limit that rose.
RATE_RECOVERY_S = 6.0
RATE_PLATEAU = 0.99


class StartRule:
    """A rule a call's start must pass; combine rules with ``&``."""

    def wait_before_start(self, now: float) -> float:
        """Return the seconds a start at ``now`` must wait (0: it may go now)."""
        return 0.0

    def record_outcome(self, failure: Failure | None, now: float) -> None:
        """Learn from a finished attempt: ``failure`` None for an answer."""
        return None

    def __and__(self, other: StartRule) -> AllRules:
        return AllRules((*_rules_of(self), *_rules_of(other)))


def _rules_of(rule: StartRule) -> tuple[StartRule, ...]:
    return rule.rules if isinstance(rule, AllRules) else (rule,)


@dataclass
class AllRules(StartRule):
    """Rules that all apply: a start waits for the longest of them; every rule hears every outcome."""

    rules: tuple[StartRule, ...]

    def wait_before_start(self, now: float) -> float:
        return max((rule.wait_before_start(now) for rule in self.rules), default=0.0)

    def record_outcome(self, failure: Failure | None, now: float) -> None:
        for rule in self.rules:
            rule.record_outcome(failure, now)


@dataclass
class ServerPause(StartRule):
    """No start before the end of the longest pause the server asked for (``until``, monotonic seconds)."""

    until: float = 0.0

    def wait_before_start(self, now: float) -> float:
        return max(0.0, self.until - now)

    def record_outcome(self, failure: Failure | None, now: float) -> None:
        if failure is not None and failure.server_delay_s:
            self.extend(now, failure.server_delay_s)

    def extend(self, now: float, seconds: float) -> None:
        """Pause starts until ``now + seconds`` at least."""
        self.until = max(self.until, now + seconds)


def names_no_limit(failure: Failure) -> bool:
    """Return whether a failure is a 429 that names no quota limit (the learned rate's signal).

    A 429 that names its limit is the quota limiter's to pace; shared capacity (``capacity``) and
    503s are thinned by the row's own backoff.
    """
    return failure.status_code == 429 and not failure.capacity and not any(quota.limit for quota in failure.quotas)


def cubic_rate(ceiling: float, seconds_since_cut: float) -> float:
    """Return the start rate ``seconds_since_cut`` after a cut from ``ceiling``: ``RATE_DECREASE`` of it at the
    cut, ``RATE_PLATEAU`` of it (flat) after ``RATE_RECOVERY_S``, more and more past that."""
    plateau = ceiling * RATE_PLATEAU
    gamma = (1.0 - RATE_DECREASE / RATE_PLATEAU) / RATE_RECOVERY_S**3
    return max(1.0 / RATE_WINDOW_S, plateau * (1.0 + gamma * (seconds_since_cut - RATE_RECOVERY_S) ** 3))


@dataclass
class LearnedRate(StartRule):
    """Starts spaced evenly at a rate learned from 429s that name no quota limit (Vertex AI's shedding of a
    shared quota, "Resource has been exhausted" with RetryInfo alone or nothing).

    Such a 429 is a rate signal: the rate that drew it is the ceiling, the rate drops to 90% of it (at most
    one cut per second: the calls in flight when it came mostly get one too) and grows back along
    :func:`cubic_rate`. Until the first such 429 starts are not held back. :meth:`wait_before_start` hands
    each caller its own turn.
    """

    max_rate: float | None = None
    ceiling: float | None = None
    next_start: float = 0.0
    last_cut_at: float | None = None
    #: How many cuts so far: a caller whose turn was given before a cut takes a new one at the new rate.
    cuts: int = 0
    recent_starts: deque[float] = field(default_factory=deque)

    def wait_before_start(self, now: float) -> float:
        return self.reserve_start(now) - now

    def reserve_start(self, now: float, earliest: float = 0.0) -> float:
        """Return this caller's start time: ``now`` (or ``earliest``), or its own turn at the learned rate."""
        start = max(now, earliest)
        if self.ceiling is not None and self.last_cut_at is not None:
            self.max_rate = cubic_rate(self.ceiling, now - self.last_cut_at)
            start = max(start, self.next_start)
            self.next_start = start + 1.0 / self.max_rate
        return start

    def record_start(self, now: float) -> None:
        """Count a start (the rate that draws a 429 is read from them)."""
        self.recent_starts.append(now)
        self._starts_in_window(now)

    def record_outcome(self, failure: Failure | None, now: float) -> None:
        if failure is None or not names_no_limit(failure):
            return
        if self.last_cut_at is not None and now - self.last_cut_at < RATE_WINDOW_S:
            return  # the calls already in flight when the first 429 came back: one cut for all of them
        ceiling = float(max(1, self._starts_in_window(now)))  # the rate that drew it...
        if self.ceiling is not None and self.last_cut_at is not None:  # ...or the learned rate, if lower
            ceiling = min(ceiling, cubic_rate(self.ceiling, now - self.last_cut_at))
        self.ceiling = ceiling
        self.max_rate = max(1.0 / RATE_WINDOW_S, ceiling * RATE_DECREASE)
        self.last_cut_at = now
        self.next_start = min(self.next_start, now)  # turns given at the old rate are taken again at the new
        self.cuts += 1

    def _starts_in_window(self, now: float) -> int:
        while self.recent_starts and now - self.recent_starts[0] >= RATE_WINDOW_S:
            self.recent_starts.popleft()
        return len(self.recent_starts)


@dataclass
class ConcurrencyLimit(StartRule):
    """How many calls may be in flight: grown by about one per window of successes up to ``maximum``.

    A 429 or 503 does not shrink it: the start rate and the rows' backoffs answer those, and calls in
    flight are not the quota.
    """

    maximum: int
    current: float = 4.0

    def __post_init__(self) -> None:
        self.current = float(min(self.maximum, max(1.0, self.current)))

    @property
    def allowed(self) -> int:
        """Return the calls allowed in flight now."""
        return max(1, int(self.current))

    def record_outcome(self, failure: Failure | None, now: float) -> None:
        if failure is None:
            self.current = min(float(self.maximum), self.current + 1.0 / self.current)


class TurnQueue:
    """Callers waiting for their turn, woken in arrival order by whoever frees one (never all at once).

    ``hand_on_if_cancelled``: a caller cancelled after it was handed a turn passes the turn on (a slot
    freed for it must not be lost); a turn that ends by itself (a loop pass) need not.
    """

    def __init__(self, *, hand_on_if_cancelled: bool = True) -> None:
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._hand_on = hand_on_if_cancelled

    def __len__(self) -> int:
        return len(self._waiting)

    async def wait(self) -> None:
        """Wait until :meth:`wake` hands this caller a turn."""
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if self._hand_on and turn.done() and not turn.cancelled():
                self.wake()  # handed a turn while being cancelled: pass it on
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiting.remove(turn)

    def wake(self, count: int = 1) -> int:
        """Hand a turn to up to ``count`` waiting callers, oldest first; return how many were woken."""
        woken = 0
        while self._waiting and woken < count:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                woken += 1
        return woken


class StartGate:
    """One call start per pass of an event loop; the others wait their turn, in order.

    A triggerer runs a thousand calls on one loop: a start builds a request and opens a connection,
    and many in one pass would stall every other trigger for all of it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue = TurnQueue(hand_on_if_cancelled=False)
        self._pass_taken = False

    async def wait(self) -> None:
        """Return once this caller may start: now if this pass is free, else in a later pass."""
        if not self._pass_taken and not len(self._queue):
            self._take_pass()
            return
        await self._queue.wait()

    def _take_pass(self) -> None:
        self._pass_taken = True
        self._loop.call_soon(self._next)

    def _next(self) -> None:
        if self._queue.wake():
            self._loop.call_soon(self._next)
            return
        self._pass_taken = False


async def wait_for_loop_pass() -> None:
    """Wait for this call's turn to start on the running loop (at most one start per loop pass)."""
    loop = asyncio.get_running_loop()
    gate = PROCESS.start_gates.get(loop)
    if gate is None:
        gate = PROCESS.start_gates[loop] = StartGate(loop)
    await gate.wait()
