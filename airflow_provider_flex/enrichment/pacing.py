"""How many enrichment calls run at once, and how far a row's backoff grows: the engine's CallPacer.

The limit is on API calls in flight, not rows: a row sitting out a retry backoff
holds no call slot, so a shedding storm does not idle the capacity the quotas
allow. The limit adapts AIMD-style between 1 and a cap. Quotas are paced by the
hook's QuotaLimiter (configured, or learned from a 429's ``quotaValue``); only a
429 that names no limit falls back to learning a start rate here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from airflow_provider_flex.hooks.call import CallPacer
from airflow_provider_flex.hooks.quota import QuotaLimiter
from airflow_provider_flex.hooks.retry import Failure

RATE_WINDOW_S = 1.0
#: A 429 that names no quota limit sets the start rate to this fraction of the rate that drew it...
RATE_DECREASE = 0.9
#: ...which then grows back by this fraction of itself per second without such a 429: the probe for
#: the unknown limit, like TCP's congestion avoidance (a cycle from 90% to 100% takes about 4 s).
RATE_INCREASE_PER_S = 0.03
#: The API is taken to be down (every row backs off in full) when none of the last this-many calls succeeded.
OUTAGE_WINDOW = 20


@dataclass
class AdaptiveLimit:
    """How many calls may run at once, and (after 429s that name no limit) how fast they may start.

    Calls in flight grow by about one per window of successes up to the cap. A 429 that names
    no quota limit (Vertex AI's shedding of a shared quota, "Resource has been exhausted" with
    RetryInfo alone or nothing) is a rate signal: starts are then paced evenly at 90% of the rate
    that drew it (at most one cut per second: the calls in flight when it came mostly get one
    too), and the rate grows back a little every second until the next such 429, so it settles
    just under the unknown limit instead of bouncing off it. A 429 that names its limit is the
    quota limiter's to pace; a 503 is the server's shared capacity, which the row's own backoff
    thins. Any server-requested delay pauses new calls.
    """

    maximum: int
    current: float = 4.0
    paused_until: float = 0.0
    max_rate: float | None = None
    next_start: float = 0.0
    last_cut_at: float | None = None
    grown_at: float = 0.0
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

    def _grow(self, now: float) -> None:
        if self.max_rate is not None and now > self.grown_at:
            self.max_rate *= 1.0 + RATE_INCREASE_PER_S * (now - self.grown_at)
            self.grown_at = now

    def wait_before_start(self, now: float) -> float:
        """Seconds until calls may start again after a server's pause."""
        return max(0.0, self.paused_until - now)

    def reserve_start(self, now: float) -> float:
        """This call's start time: now, or its own turn at the learned rate (evenly spaced, one per caller)."""
        start = max(now, self.paused_until)
        if self.max_rate is not None:
            self._grow(now)
            start = max(start, self.next_start)
            self.next_start = start + 1.0 / self.max_rate
        return start

    def record_start(self, now: float) -> None:
        self.recent_starts.append(now)
        self._starts_in_window(now)

    def on_success(self) -> None:
        self.current = min(float(self.maximum), self.current + 1.0 / self.current)

    def on_failure(self, failure: Failure, now: float) -> None:
        if failure.server_delay_s:
            self.paused_until = max(self.paused_until, now + failure.server_delay_s)
        if failure.status_code != 429 or failure.capacity or any(quota.limit for quota in failure.quotas):
            return  # a named limit is the quota limiter's to pace; shared capacity is the row's backoff's
        if self.last_cut_at is not None and now - self.last_cut_at < RATE_WINDOW_S:
            return  # the calls already in flight when the first 429 came back: one cut for all of them
        started = float(max(1, self._starts_in_window(now)))
        rate = started if self.max_rate is None else min(self.max_rate, started)
        self.max_rate = max(1.0 / RATE_WINDOW_S, rate * RATE_DECREASE)
        self.last_cut_at = self.grown_at = now


class EnrichmentPacer(CallPacer):
    """The engine's side of every API attempt: a call slot, the shared failure streak, the counts."""

    log_level = logging.DEBUG  # progress lines summarise; per-call lines would flood the task log

    def __init__(self, max_concurrency: int) -> None:
        self.limit = AdaptiveLimit(max_concurrency)
        self.calls_in_flight = 0
        self.peak_in_flight = 0
        #: Outcomes of the last calls of all rows (True: answered), 429s with a retryDelay left out.
        self.recent_outcomes: deque[bool] = deque(maxlen=OUTAGE_WINDOW)
        self.rate_limited_429 = 0
        self.unavailable_503 = 0
        #: Row tasks whose request is on its way (past every wait): the ones a stopping run lets finish.
        self.tasks_sending: set[asyncio.Task[object]] = set()
        self._waiting: deque[asyncio.Future[None]] = deque()
        self.quota: QuotaLimiter | None = None

    def watch_quota(self, limiter: QuotaLimiter) -> None:
        """The quota limiter of the model the run calls, to tell when the quota paces the calls."""
        self.quota = limiter

    @property
    def outage(self) -> bool:
        """None of the last OUTAGE_WINDOW calls was answered: the API is down, not shedding at random."""
        return len(self.recent_outcomes) == OUTAGE_WINDOW and not any(self.recent_outcomes)

    def backoff_step(self, attempt: int) -> int:
        """How far a row's backoff grows: with the run's health, not the row's own bad luck.

        Under random shedding (half the calls fail, the others succeed) a row failing six
        times is bad luck, not an outage: it waits the first backoff step only, and none
        at all while a known quota paces the calls (the retry waits for its turn in the
        quota, so the request rate stays the quota's either way). When no recent call was
        answered the API is down, and each row backs off as far as its own attempts.
        """
        if self.outage:
            return attempt
        if self.quota is not None and self.quota.known_limits():
            return 0
        return 1

    def on_failure(self, failure: Failure) -> None:
        if failure.server_delay_s is None:  # a 429 with retryDelay is about our rate, not the API's capacity
            self.recent_outcomes.append(False)
        if failure.status_code == 429:
            self.rate_limited_429 += 1
        elif failure.status_code == 503:
            self.unavailable_503 += 1
        self.limit.on_failure(failure, time.monotonic())

    def on_success(self) -> None:
        self.recent_outcomes.append(True)
        self.limit.on_success()

    @asynccontextmanager
    async def attempt(self) -> AsyncIterator[None]:
        """Held by each API attempt: at most ``limit.allowed`` at once, handed on in arrival order."""
        while True:
            wait = self.limit.wait_before_start(time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if self.calls_in_flight < self.limit.allowed and not self._waiting:
                break
            turn = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await turn  # woken by exactly one finishing call, not all at once
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._wake_next()  # handed a turn while being cancelled: pass it on
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(turn)
            if self.calls_in_flight < self.limit.allowed:
                break
        self.calls_in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.calls_in_flight)
        task = asyncio.current_task()
        try:
            now = time.monotonic()
            start = self.limit.reserve_start(now)  # with the slot held: a turn at the learned rate, if any
            if start > now:
                await asyncio.sleep(start - now)
            self.limit.record_start(time.monotonic())
            yield
        finally:
            self.calls_in_flight -= 1
            self.tasks_sending.discard(task)  # type: ignore[arg-type]
            self._wake_next()

    def sending(self) -> None:
        """The current attempt's request goes now (the hook calls this after the quota and start waits)."""
        task = asyncio.current_task()
        if task is not None:
            self.tasks_sending.add(task)

    def _wake_next(self) -> None:
        """Wake as many waiting attempts as there are free slots (the limit may have grown), at least one."""
        free = max(1, self.limit.allowed - self.calls_in_flight)
        while self._waiting and free:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                free -= 1
