"""The Gemini API's quotas as the emulator enforces them: per project (API key) and per model.

Following the rate-limit documentation (https://ai.google.dev/gemini-api/docs/rate-limits)
and public 429 bodies (see shared/reference/gemini-quotas-facts.md): requests per
minute, input tokens per minute and requests per day, per project and per model;
the day resets at midnight America/Los_Angeles. Minute windows are fixed at the
minute boundary by default (a community answer says limits reset at second 00), or
sliding. Refusals carry ``google.rpc.QuotaFailure`` (quotaMetric, quotaId,
quotaDimensions, quotaValue), ``google.rpc.Help`` and, for minute quotas only,
``google.rpc.RetryInfo`` in whole seconds. The per-second request limit (``--rps``)
is the emulator's own, for burst tests; the real API has none.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from airflow_provider_flex.emulator.capacity import format_duration

DAY_TIMEZONE = ZoneInfo("America/Los_Angeles")
RATE_LIMIT_DOCS = "https://ai.google.dev/gemini-api/docs/rate-limits"
QUOTA_WINDOWS = ("fixed", "sliding")


@dataclass(frozen=True)
class ModelQuota:
    """One model's quotas per project; 0 = unlimited."""

    rpm: int = 0
    tpm: int = 0
    rpd: int = 0


@dataclass(frozen=True)
class Quota:
    """How one quota is named in a 429 and what it counts."""

    quota_id: str
    metric: str
    unit: str  # "requests" or "tokens"
    window: str  # "second", "minute" or "day"


REQUESTS_PER_MINUTE = Quota(
    "GenerateRequestsPerMinutePerProjectPerModel",
    "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
    "requests",
    "minute",
)
INPUT_TOKENS_PER_MINUTE = Quota(
    "GenerateContentInputTokensPerModelPerMinute",
    "generativelanguage.googleapis.com/generate_content_paid_tier_input_token_count",
    "tokens",
    "minute",
)
REQUESTS_PER_DAY = Quota(
    "GenerateRequestsPerDayPerProjectPerModel",
    "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
    "requests",
    "day",
)
#: The emulator's own burst limit (``--rps``), per API key over all models.
REQUESTS_PER_SECOND = Quota(
    "GenerateRequestsPerSecondPerProject",
    "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
    "requests",
    "second",
)


@dataclass(frozen=True)
class Violation:
    quota: Quota
    limit: int
    model: str | None
    retry_after_s: float | None  # None for the day: nothing helps before the reset

    def detail(self) -> dict[str, Any]:
        dimensions = {"location": "global"}
        if self.model is not None:
            dimensions["model"] = self.model
        return {
            "quotaMetric": self.quota.metric,
            "quotaId": self.quota.quota_id,
            "quotaDimensions": dimensions,
            "quotaValue": str(self.limit),
        }


class QuotaExceeded(Exception):
    """A request over one or more quotas; ``error_body()`` is Gemini's 429 for it."""

    def __init__(self, violations: list[Violation]) -> None:
        super().__init__(", ".join(v.quota.quota_id for v in violations))
        self.violations = violations

    @property
    def retry_delay_s(self) -> float | None:
        """Return RetryInfo's delay: only when every violation passes with time short of a new day."""
        delays = [v.retry_after_s for v in self.violations]
        if any(delay is None for delay in delays):
            return None
        return max(delays)  # type: ignore[type-var]

    def message(self) -> str:
        lines = [
            "You exceeded your current quota, please check your plan and billing details. For more information "
            f"on this error, head to: {RATE_LIMIT_DOCS}. To monitor your current usage, head to: "
            "https://ai.dev/rate-limit. "
        ]
        for v in self.violations:
            model = f", model: {v.model}" if v.model else ""
            lines.append(f"* Quota exceeded for metric: {v.quota.metric}, limit: {v.limit}{model}")
        delay = self.retry_delay_s
        if delay is not None:
            lines.append(f"Please retry in {delay:.6f}s.")
        return "\n".join(lines)

    def details(self) -> list[dict[str, Any]]:
        details: list[dict[str, Any]] = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [v.detail() for v in self.violations],
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{"description": "Learn more about Gemini API quotas", "url": RATE_LIMIT_DOCS}],
            },
        ]
        delay = self.retry_delay_s
        if delay is not None:
            whole = any(v.quota.window != "second" for v in self.violations)
            details.append(
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay(delay, whole)}
            )
        return details


def retry_delay(seconds: float, whole: bool = True) -> str:
    """Return RetryInfo's duration: whole seconds, as the API sends for its quotas (``"26s"``).

    The emulator's own per-second limit answers in milliseconds (``"0.250s"``), or a
    one-second wait would dwarf the window it enforces.
    """
    return f"{max(1, math.ceil(seconds))}s" if whole else format_duration(seconds)


class _Window:
    """Units counted per key in windows of ``length_s``: fixed at multiples of it, or sliding."""

    def __init__(self, length_s: float, sliding: bool) -> None:
        self.length_s = length_s
        self.sliding = sliding
        self._fixed: dict[Any, tuple[int, float]] = {}
        self._events: dict[Any, deque[tuple[float, float]]] = {}

    def used(self, key: Any, now: float) -> float:
        if not self.sliding:
            index, total = self._fixed.get(key, (-1, 0.0))
            return total if index == int(now // self.length_s) else 0.0
        events = self._events.get(key)
        if not events:
            return 0.0
        while events and events[0][0] <= now - self.length_s:
            events.popleft()
        return sum(units for _, units in events)

    def retry_after(self, key: Any, now: float, units: float, limit: float) -> float:
        """Return seconds until ``units`` more would fit."""
        if not self.sliding:
            return self.length_s - (now % self.length_s)
        events = self._events.get(key) or deque()
        excess = sum(u for _, u in events) + units - limit
        for stamp, amount in events:
            excess -= amount
            if excess <= 0:
                return max(0.001, stamp + self.length_s - now)
        return self.length_s

    def add(self, key: Any, now: float, units: float) -> None:
        if not self.sliding:
            index = int(now // self.length_s)
            current, total = self._fixed.get(key, (index, 0.0))
            self._fixed[key] = (index, (total if current == index else 0.0) + units)
        else:
            self._events.setdefault(key, deque()).append((now, units))


class QuotaBook:
    """Counts each project's requests and input tokens per model, and refuses what is over a quota.

    ``clock`` is wall time in seconds (``time.time``): minute windows are fixed at
    wall-clock minute boundaries, as the API's are reported to be.
    """

    def __init__(
        self,
        *,
        default: ModelQuota,
        per_model: dict[str, ModelQuota],
        window: str = "fixed",
        rps: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window not in QUOTA_WINDOWS:
            raise ValueError(f"quota window must be one of {QUOTA_WINDOWS}, got {window!r}")
        self.default = default
        self.per_model = per_model
        self.rps = rps
        self.clock = clock
        sliding = window == "sliding"
        self._requests = _Window(60.0, sliding)
        self._tokens = _Window(60.0, sliding)
        self._second = _Window(1.0, sliding=True)
        self._day_counts: Counter[tuple[str, str]] = Counter()
        self._day = ""
        self._days_ended = 0
        self.refusals: Counter[str] = Counter()

    def quota_for(self, model: str) -> ModelQuota:
        return self.per_model.get(model, self.default)

    def day_id(self, now: float) -> str:
        """Return the quota day: the date in America/Los_Angeles, moved on by each early end of day."""
        date = datetime.fromtimestamp(now, DAY_TIMEZONE).date().isoformat()
        return f"{date}+{self._days_ended}"

    def end_day(self) -> None:
        """Start a new quota day now (a test control; the API's day ends at midnight Pacific)."""
        self._days_ended += 1
        self._day_counts.clear()

    def admit(self, key: str, model: str, input_tokens: int) -> None:
        """Count one request, or raise QuotaExceeded naming every quota it would break."""
        now = self.clock()
        quota = self.quota_for(model)
        scoped = (key, model)
        day = self.day_id(now)
        if day != self._day:  # a new quota day: yesterday's counts are gone
            self._day, self._day_counts = day, Counter()
        day_key = scoped
        violations: list[Violation] = []
        if self.rps > 0 and self._second.used(key, now) + 1 > self.rps:
            wait = self._second.retry_after(key, now, 1, self.rps)
            violations.append(Violation(REQUESTS_PER_SECOND, int(self.rps), None, wait))
        if quota.rpm and self._requests.used(scoped, now) + 1 > quota.rpm:
            wait = self._requests.retry_after(scoped, now, 1, quota.rpm)
            violations.append(Violation(REQUESTS_PER_MINUTE, quota.rpm, model, wait))
        if quota.tpm:
            used = self._tokens.used(scoped, now)
            if used + input_tokens > quota.tpm and used > 0:  # a lone request over the limit still passes
                wait = self._tokens.retry_after(scoped, now, input_tokens, quota.tpm)
                violations.append(Violation(INPUT_TOKENS_PER_MINUTE, quota.tpm, model, wait))
        if quota.rpd and self._day_counts[day_key] + 1 > quota.rpd:
            violations.append(Violation(REQUESTS_PER_DAY, quota.rpd, model, None))
        if violations:
            for violation in violations:
                self.refusals[violation.quota.quota_id] += 1
            raise QuotaExceeded(violations)
        if self.rps > 0:
            self._second.add(key, now, 1)
        self._requests.add(scoped, now, 1)
        self._tokens.add(scoped, now, input_tokens)
        self._day_counts[day_key] += 1
