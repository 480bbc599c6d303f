"""What a 429 says: the quotas its ``google.rpc.QuotaFailure`` names, and when a per-day quota resets.

Pure reading of error bodies, apart from pacing (``quota``) so the retry decisions (``retry``) and
the errors (``exceptions``) can use it without the limiter. Many 429s in the wild carry no
QuotaFailure at all (Vertex AI's shared-capacity shedding, "Resource has been exhausted"): then
nothing is read, and the caller must not rely on it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

#: The per-day quotas reset at midnight here.
QUOTA_TIMEZONE = ZoneInfo("America/Los_Angeles")
_WINDOW_RE = re.compile(r"Per(Second|Minute|Day)", re.IGNORECASE)


@dataclass(frozen=True)
class QuotaViolation:
    """One quota a 429 says ran out (one ``QuotaFailure`` violation)."""

    quota_id: str
    metric: str | None = None
    window: str | None = None  # "second", "minute", "day" or None when the id does not say
    unit: str = "requests"  # "requests" or "tokens"
    limit: int | None = None  # quotaValue: the quota itself
    model: str | None = None
    location: str | None = None

    @property
    def daily(self) -> bool:
        return self.window == "day"

    @property
    def name(self) -> str:
        """Return human words for the quota, e.g. ``input tokens per minute``."""
        unit = "input tokens" if self.unit == "tokens" else "requests"
        return f"{unit} per {self.window}" if self.window else unit

    def to_dict(self) -> dict[str, Any]:
        return {
            "quota_id": self.quota_id,
            "metric": self.metric,
            "window": self.window,
            "unit": self.unit,
            "limit": self.limit,
            "model": self.model,
            "location": self.location,
        }


def read_quota_violations(error_body: Any) -> tuple[QuotaViolation, ...]:
    """Return the quotas a Gemini error body's ``google.rpc.QuotaFailure`` details name (empty when none).

    quotaIds such as ``GenerateRequestsPerMinutePerProjectPerModel`` or
    ``GenerateContentInputTokensPerModelPerMinute-FreeTier`` give the window (second,
    minute, day) and the unit (requests or input tokens); ``quotaValue`` is the limit.
    """
    error = error_body.get("error", error_body) if isinstance(error_body, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    violations: list[QuotaViolation] = []
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, Mapping) or not str(detail.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            continue
        for raw in detail.get("violations") or []:
            if isinstance(raw, Mapping):
                violations.append(_violation(raw))
    return tuple(violations)


def _violation(raw: Mapping[str, Any]) -> QuotaViolation:
    quota_id = str(raw.get("quotaId") or raw.get("quota_id") or "")
    metric = raw.get("quotaMetric") or raw.get("quota_metric")
    window_match = _WINDOW_RE.search(quota_id)
    described = f"{quota_id} {metric or ''}".lower()
    dimensions = raw.get("quotaDimensions") or raw.get("quota_dimensions") or {}
    dimensions = dimensions if isinstance(dimensions, Mapping) else {}
    try:
        limit = int(float(raw.get("quotaValue") or raw.get("quota_value")))
    except (TypeError, ValueError):
        limit = None
    return QuotaViolation(
        quota_id=quota_id,
        metric=str(metric) if metric else None,
        window=window_match.group(1).lower() if window_match else None,
        unit="tokens" if "token" in described else "requests",
        limit=limit,
        model=dimensions.get("model"),
        location=dimensions.get("location"),
    )


def next_daily_reset(now: datetime) -> datetime:
    """Return when the per-day quotas next reset: the coming midnight in America/Los_Angeles, as UTC."""
    local = now.astimezone(QUOTA_TIMEZONE)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=QUOTA_TIMEZONE)
    return midnight.astimezone(timezone.utc)
