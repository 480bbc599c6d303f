"""Pacing calls to Gemini's quotas so that they are used fully without 429s.

The Gemini API limits each project per model by requests per minute, input tokens
per minute and requests per day (reset at midnight America/Los_Angeles). A quota
429 may name the quota in a ``google.rpc.QuotaFailure`` detail with its limit as
``quotaValue``; ``quota_errors.read_quota_violations`` reads it. :class:`QuotaLimiter`
keeps one (connection, model)'s quotas in a process: configured limits, limits
learned from ``quotaValue``, server pauses and a spent day; every call of the hook
reserves its start through it. Pacing is a GCRA (starts spaced evenly, so there is
no burst at the top of a minute) bounded by a sliding log (never more than the
limit in any window, so fixed and sliding server windows are both respected).
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow_provider_flex.arguments import QuotaLimits
from airflow_provider_flex.hooks.pacing import ServerPause
from airflow_provider_flex.hooks.quota_errors import (
    QuotaViolation,
    next_daily_reset,
)
from airflow_provider_flex.hooks.request import estimate_prompt_chars
from airflow_provider_flex.hooks.shared_quota import (
    SharedDayBlocked,
    SharedPace,
    SharedQuotaLink,
    SharedReservation,
)
from airflow_provider_flex.process_state import PROCESS

#: Seconds of each window a quotaId can name; a day is a calendar day in QUOTA_TIMEZONE.
WINDOW_SECONDS: Mapping[str, float] = {"second": 1.0, "minute": 60.0}
#: After a per-day 429, calls in this process wait for the reset, but look again after this long at most
#: (a day that reset early, a clock that disagrees): one refused call per connection and model at worst.
DAY_BLOCK_RECHECK_S = 900.0
#: Seconds added to each window when counting what it holds: a request's arrival at the server
#: varies by milliseconds, and one arriving a little late must not land in a full window.
WINDOW_MARGIN_S = 0.025
#: Shared pacing spreads starts over this much more than the window: processes on other hosts send a
#: reserved start late by their own loop's delays, and late starts bunch up against the ones on time.
SHARED_WINDOW_SLACK = 0.015
#: Prompt tokens per character before any answer has said how many the model counted.
INITIAL_TOKENS_PER_CHAR = 0.3
#: Tokens a non-text part (an image, a file) is estimated at before the answer says.
NON_TEXT_PART_TOKENS = 258


# --------------------------------------------------------------------------- pacing


class _Entry:
    """Units one start took from a window; corrected once the answer says how many it really used."""

    __slots__ = ("at", "in_window", "units")

    def __init__(self, at: float, units: float) -> None:
        self.at = at
        self.units = units
        self.in_window = True


@dataclass
class WindowPace:
    """One quota over a window of ``window_s`` seconds: even spacing bounded by a sliding log.

    ``limit`` None means unknown: starts are logged (so a limit learned later
    accounts for them) but not held back.
    """

    window_s: float
    configured: int | None = None
    learned: int | None = None
    tat: float = 0.0  # theoretical arrival time: the earliest next start under even spacing
    log: deque[_Entry] = field(default_factory=deque)
    total: float = 0.0
    share: int = 1  # pacing alone while the processes sharing the quota cannot agree: 1/share of it

    @property
    def limit(self) -> int | None:
        known = [value for value in (self.configured, self.learned) if value]
        return max(1, min(known) // self.share) if known else None

    def prune(self, now: float) -> None:
        while self.log and self.log[0].at <= now - self.window_s - WINDOW_MARGIN_S:
            entry = self.log.popleft()
            entry.in_window = False
            self.total -= entry.units

    def earliest(self, now: float, units: float) -> float:
        """Return the first moment at or after ``now`` when ``units`` more may start."""
        limit = self.limit
        if limit is None:
            return now
        start = max(now, self.tat)
        if self.total + units <= limit or not self.log:
            return start
        excess = self.total + units - limit
        span = self.window_s + WINDOW_MARGIN_S
        for entry in self.log:  # wait until enough of the oldest starts leave the window
            excess -= entry.units
            if excess <= 0:
                return max(start, entry.at + span)
        return max(start, self.log[-1].at + span)

    def take(self, start: float, units: float) -> _Entry:
        entry = _Entry(start, units)
        self.log.append(entry)
        self.total += units
        limit = self.limit
        if limit:
            self.tat = max(self.tat, start) + units * self.window_s / limit
        return entry

    def correct(self, entry: _Entry, units: float) -> None:
        """Set a start's units to what it really used (0 refunds a start the server did not count)."""
        delta = units - entry.units
        entry.units = units
        if entry.in_window:
            self.total += delta
        limit = self.limit
        if limit:
            self.tat += delta * self.window_s / limit


@dataclass(frozen=True)
class DayBlocked:
    """The per-day quota is spent until ``reset_at``."""

    quota: QuotaViolation
    reset_at: datetime


@dataclass
class Reservation:
    """One call's place in the quotas: when it may start and what it took (here, or in the shared state)."""

    start: float
    tokens: int
    chars: int
    entries: dict[str, _Entry] = field(default_factory=dict)
    shared_units: dict[str, float] | None = None


class QuotaLimiter:
    """The quotas of one (connection, model) in this process, shared by every call of the hook.

    Thread-safe and loop-agnostic: :meth:`reserve` returns when a call may start
    and the caller sleeps its own way (``time.sleep`` or ``asyncio.sleep``).
    ``now`` is ``time.monotonic()``; ``wall`` is an aware datetime, for the day.
    """

    def __init__(self, model: str, limits: QuotaLimits | None = None) -> None:
        self.model = model
        self._lock = threading.Lock()
        #: name -> pace; a name ending in ``tokens_per_...`` counts prompt tokens, the others requests.
        self.paces: dict[str, WindowPace] = {
            "requests_per_minute": WindowPace(WINDOW_SECONDS["minute"]),
            "tokens_per_minute": WindowPace(WINDOW_SECONDS["minute"]),
        }
        #: The server's pause for this model's calls (RetryInfo of a 429 that names its quota).
        self.pause = ServerPause()
        self.day_blocked: DayBlocked | None = None
        self.day_blocked_until = 0.0  # monotonic: when to look again
        self.requests_per_day: int | None = None
        self.day_count = 0
        self.day_reset_at: datetime | None = None
        self.tokens_per_char = INITIAL_TOKENS_PER_CHAR
        self.shared: SharedQuotaLink | None = None
        self.configure(limits or QuotaLimits())

    @property
    def paused_until(self) -> float:
        """Return when the server's pause ends (monotonic seconds; in the past: no pause)."""
        return self.pause.until

    def share_with(self, link: SharedQuotaLink) -> None:
        """Pace through a state every process shares (Redis), falling back to this one when it is down."""
        self.shared = link

    # ---- configuration and what is known

    def configure(self, limits: QuotaLimits) -> None:
        """Set the configured limits (learned ones still apply when lower)."""
        with self._lock:
            self.paces["requests_per_minute"].configured = limits.requests_per_minute
            self.paces["tokens_per_minute"].configured = limits.tokens_per_minute
            self.requests_per_day = limits.requests_per_day

    def known_limits(self) -> dict[str, tuple[int, str]]:
        """Return each paced quota's limit and where it came from (``configured`` or ``learned``)."""
        known = {}
        for name, pace in self.paces.items():
            if pace.limit is not None:
                source = "configured" if pace.limit == pace.configured else "learned"
                known[name] = (pace.limit, source)
        return known

    # ---- reservations

    def estimate_tokens(self, contents: Any) -> tuple[int, int]:
        """Return (estimated prompt tokens, characters) of ``contents``, from what earlier answers counted."""
        chars, other_parts = estimate_prompt_chars(contents)
        return max(1, round(chars * self.tokens_per_char) + other_parts * NON_TEXT_PART_TOKENS), chars

    def reserve(self, contents: Any, *, now: float, wall: datetime) -> Reservation | DayBlocked:
        """Reserve a start for one call: its start time, or DayBlocked while the day is spent."""
        tokens, chars = self.estimate_tokens(contents)
        units = {name: tokens if name.startswith("tokens") else 1 for name in self.paces}
        if self.shared is not None:
            shared = self._reserve_shared(units, now, wall)
            if isinstance(shared, DayBlocked):
                return shared
            if shared is not None:
                return Reservation(start=now + shared.wait_s, tokens=tokens, chars=chars, shared_units=units)
        with self._lock:
            blocked = self._day_blocked(now, wall)
            if blocked is not None:
                return blocked
            share = self.shared.processes if self.shared is not None else 1
            start = now + self.pause.wait_before_start(now)
            for name, pace in self.paces.items():
                pace.share = share
                pace.prune(now)
                start = max(start, pace.earliest(now, units[name]))
            self.day_count += 1
            entries = {name: pace.take(start, units[name]) for name, pace in self.paces.items()}
            return Reservation(start=start, tokens=tokens, chars=chars, entries=entries)

    def correct_tokens(self, reservation: Reservation, prompt_tokens: int | None) -> None:
        """Correct a finished call's token estimate with what the API counted, and learn the ratio."""
        if not prompt_tokens:
            return
        if reservation.shared_units is not None and self.shared is not None:
            self.shared.post("adjust", self._shared_pace("tokens_per_minute"), prompt_tokens - reservation.tokens)
        with self._lock:
            if reservation.shared_units is None:
                self.paces["tokens_per_minute"].correct(reservation.entries["tokens_per_minute"], prompt_tokens)
            if reservation.chars >= 20:
                ratio = prompt_tokens / reservation.chars
                self.tokens_per_char += 0.2 * (ratio - self.tokens_per_char)

    def on_refused(
        self,
        reservation: Reservation | None,
        violations: tuple[QuotaViolation, ...],
        server_delay_s: float | None,
        *,
        now: float,
        wall: datetime,
    ) -> DayBlocked | None:
        """Learn from a quota 429: the limits it names, its pause, or a spent day (returned)."""
        if self.shared is not None:
            self._tell_shared(reservation, violations, server_delay_s, wall)
        with self._lock:
            if reservation is not None:  # the server did not count a refused call
                self.day_count = max(0, self.day_count - 1)
                for name, entry in reservation.entries.items():
                    self.paces[name].correct(entry, 0)
            for violation in violations:
                if violation.daily:
                    self.day_blocked = DayBlocked(violation, next_daily_reset(wall))
                    self.day_blocked_until = now + DAY_BLOCK_RECHECK_S
                    return self.day_blocked
                pace = self._pace_for(violation)
                if pace is not None and violation.limit:
                    pace.learned = violation.limit
            if server_delay_s and violations:
                self.pause.extend(now, server_delay_s)
            return None

    def _shared_pace(self, name: str, units: float = 0.0) -> SharedPace:
        pace = self.paces[name]
        window = pace.window_s * (1 + SHARED_WINDOW_SLACK) + WINDOW_MARGIN_S
        return SharedPace(name, window, pace.configured, units)

    def _reserve_shared(
        self, units: dict[str, float], now: float, wall: datetime
    ) -> SharedReservation | DayBlocked | None:
        assert self.shared is not None
        reset_at = next_daily_reset(wall)
        outcome = self.shared.call(
            "reserve",
            [self._shared_pace(name, units[name]) for name in self.paces],
            requests_per_day=self.requests_per_day,
            reset_in_s=(reset_at - wall).total_seconds(),
        )
        if isinstance(outcome, SharedDayBlocked):
            quota = QuotaViolation("requests per day (shared)", window="day", limit=self.requests_per_day)
            return DayBlocked(quota, reset_at)
        return outcome

    def _tell_shared(
        self,
        reservation: Reservation | None,
        violations: tuple[QuotaViolation, ...],
        server_delay_s: float | None,
        wall: datetime,
    ) -> None:
        """Tell every process what a quota 429 said: learned limits, the pause, a spent day; refund the call."""
        assert self.shared is not None
        if reservation is not None and reservation.shared_units is not None:
            for name, units in reservation.shared_units.items():
                self.shared.post("adjust", self._shared_pace(name), -units)
        daily = any(v.daily for v in violations)
        limits = {}
        for violation in violations:
            pace_name = self._pace_name(violation)
            if pace_name is not None and violation.limit:
                limits[pace_name] = violation.limit
        until_reset = (next_daily_reset(wall) - wall).total_seconds()
        self.shared.post(
            "learn",
            pause_s=server_delay_s or 0.0,
            day_blocked_s=min(until_reset, DAY_BLOCK_RECHECK_S) if daily else 0.0,
            limits=limits,
        )

    def clear_day_block(self) -> None:
        """Forget a spent day (a task resuming after the reset looks again)."""
        with self._lock:
            self.day_blocked = None
            self.day_blocked_until = 0.0

    @staticmethod
    def _pace_name(violation: QuotaViolation) -> str | None:
        if violation.window == "minute":
            return "tokens_per_minute" if violation.unit == "tokens" else "requests_per_minute"
        if violation.window == "second" and violation.unit == "requests":
            return "requests_per_second"
        return None

    def _pace_for(self, violation: QuotaViolation) -> WindowPace | None:
        name = self._pace_name(violation)
        if name is None:
            return None
        return self.paces.setdefault(name, WindowPace(WINDOW_SECONDS[name.rsplit("_", 1)[-1]]))

    def _day_blocked(self, now: float, wall: datetime) -> DayBlocked | None:
        if self.day_reset_at is None or wall >= self.day_reset_at:
            self.day_reset_at = next_daily_reset(wall)
            self.day_count = 0
        if self.day_blocked is not None:
            if wall < self.day_blocked.reset_at and now < self.day_blocked_until:
                return self.day_blocked
            self.day_blocked = None
        if self.requests_per_day is not None and self.day_count >= self.requests_per_day:
            quota = QuotaViolation(
                quota_id="requests_per_day (configured)",
                window="day",
                limit=self.requests_per_day,
                model=self.model,
            )
            return DayBlocked(quota, self.day_reset_at)
        return None


def project_fingerprint(api_key: str, base_url: str | None) -> str:
    """Return a stable, irreversible name for the project a key calls (never the key itself)."""
    return hashlib.sha256(f"{base_url or ''}|{api_key}".encode()).hexdigest()[:16]


def quota_limiter(conn_id: str, project: str, model: str, limits: QuotaLimits | None = None) -> QuotaLimiter:
    """Return the one limiter of this process for (connection, project, model); ``limits`` (re)configures it.

    ``project`` is :func:`project_fingerprint` of the connection's key and base URL, so
    a connection edited to another key or endpoint does not inherit what the old one learned.
    """
    key = (conn_id, project, model.removeprefix("models/"))
    with PROCESS.lock:
        limiter = PROCESS.limiters.get(key)
        if limiter is None:
            limiter = PROCESS.limiters[key] = QuotaLimiter(key[2], limits)
            return limiter
    if limits is not None:
        limiter.configure(limits)
    return limiter
