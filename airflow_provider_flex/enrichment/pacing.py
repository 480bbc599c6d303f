"""How many enrichment calls run at once, and how far a row's backoff grows: the engine's CallPacer.

The limit is on API calls in flight, not rows: a row sitting out a retry backoff
holds no call slot, so a shedding storm does not idle the capacity the quotas
allow. The limit adapts AIMD-style between 1 and a cap. Quotas are paced by the
hook's QuotaLimiter (configured, or learned from a 429's ``quotaValue``); only a
429 that names no limit falls back to learning a start rate here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from airflow_provider_flex.enrichment.summary import CallCounts
from airflow_provider_flex.hooks.call import CallPacer
from airflow_provider_flex.hooks.pacing import AllRules, ConcurrencyLimit, LearnedRate, ServerPause, TurnQueue
from airflow_provider_flex.hooks.quota import QuotaLimiter
from airflow_provider_flex.hooks.retry import Failure

#: The API is taken to be down (every row backs off in full) when none of the last this-many calls succeeded.
OUTAGE_WINDOW = 20


class AdaptiveLimit(AllRules):
    """The enrichment's start rules: calls in flight (:class:`ConcurrencyLimit`), the server's pause
    (:class:`ServerPause`) and the rate learned from 429s that name no limit (:class:`LearnedRate`)."""

    def __init__(self, maximum: int, current: float = 4.0) -> None:
        self.concurrency = ConcurrencyLimit(maximum, current)
        self.pause = ServerPause()
        self.rate = LearnedRate()
        super().__init__((self.concurrency, self.pause, self.rate))

    @property
    def maximum(self) -> int:
        return self.concurrency.maximum

    @property
    def current(self) -> float:
        return self.concurrency.current

    @property
    def allowed(self) -> int:
        """Return the calls allowed in flight now."""
        return self.concurrency.allowed

    @property
    def paused_until(self) -> float:
        return self.pause.until

    @property
    def max_rate(self) -> float | None:
        return self.rate.max_rate

    def wait_before_start(self, now: float) -> float:
        """Return the seconds until calls may start again after a server's pause (a slot's holder then
        takes its turn at the learned rate with :meth:`reserve_start`)."""
        return self.pause.wait_before_start(now)

    def reserve_start(self, now: float) -> float:
        """Return this call's start time: now, or its own turn at the learned rate (evenly spaced, one per caller)."""
        return self.rate.reserve_start(now, earliest=self.pause.until)

    def record_start(self, now: float) -> None:
        self.rate.record_start(now)

    def on_success(self, now: float | None = None) -> None:
        self.record_outcome(None, time.monotonic() if now is None else now)

    def on_failure(self, failure: Failure, now: float) -> None:
        self.record_outcome(failure, now)


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
        #: API requests sent (every attempt that went, retries included): what the API counts as calls.
        self.api_requests = 0
        #: Row tasks whose request went (past every wait): the ones a stopping run lets finish.
        self.requests_sent: set[asyncio.Task[object]] = set()
        self._waiting = TurnQueue()
        self.quota: QuotaLimiter | None = None

    def watch_quota(self, limiter: QuotaLimiter) -> None:
        """Watch the quota limiter of the model the run calls, to tell when the quota paces the calls."""
        self.quota = limiter

    def counts(self) -> CallCounts:
        """Return what this pacer counted: 429s and 503s refused, the most calls in flight, requests sent."""
        return CallCounts(self.rate_limited_429, self.unavailable_503, self.peak_in_flight, self.api_requests)

    @property
    def outage(self) -> bool:
        """Return whether none of the last OUTAGE_WINDOW calls was answered (the API is down, not shedding at random)."""
        return len(self.recent_outcomes) == OUTAGE_WINDOW and not any(self.recent_outcomes)

    def backoff_step(self, attempt: int) -> int:
        """Return how far a row's backoff grows: with the run's health, not the row's own bad luck.

        Under random shedding (half the calls fail, the others succeed) a row failing six
        times is bad luck, not an outage: it waits the first backoff step only, and none
        at all while a start rate paces the calls, a known quota's or the rate learned from
        429s that name no limit (the retry waits for its turn in that rate, so the request
        rate stays the same either way, and a row refused near the end of a run does not
        sit out a backoff the pacing already provides). When no recent call was answered
        the API is down, and each row backs off as far as its own attempts.
        """
        if self.outage:
            return attempt
        if self.limit.max_rate is not None or (self.quota is not None and self.quota.known_limits()):
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
            if self.calls_in_flight < self.limit.allowed and not len(self._waiting):
                break
            await self._waiting.wait()  # woken by exactly one finishing call, not all at once
            if self.calls_in_flight < self.limit.allowed:
                break
        self.calls_in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.calls_in_flight)
        task = asyncio.current_task()
        try:
            while True:  # with the slot held: a turn at the learned rate, if any; a cut meanwhile means a new turn
                cuts, now = self.limit.rate.cuts, time.monotonic()
                start = self.limit.reserve_start(now)
                if start > now:
                    await asyncio.sleep(start - now)
                if self.limit.rate.cuts == cuts:
                    break
            self.limit.record_start(time.monotonic())
            yield
        finally:
            self.calls_in_flight -= 1
            self.requests_sent.discard(task)  # type: ignore[arg-type]
            self._wake_next()

    def request_sent(self) -> None:
        """Note that the current attempt's request goes now (the hook calls this after the quota and start waits)."""
        self.api_requests += 1
        task = asyncio.current_task()
        if task is not None:
            self.requests_sent.add(task)

    def _wake_next(self) -> None:
        """Wake as many waiting attempts as there are free slots (the limit may have grown), at least one."""
        self._waiting.wake(max(1, self.limit.allowed - self.calls_in_flight))
