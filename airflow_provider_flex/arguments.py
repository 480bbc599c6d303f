"""The values operators check when a DAG is parsed: tiers, configured quotas, media size limits.

Kept light on purpose: a DAG file that builds an operator pays for this module, not for the hook,
the pacing or google-genai, which load when a task runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TIERS = ("flex", "standard", "priority")
#: Raw bytes a file may have to travel inline: base64 makes it a third larger, and the API takes 20 MB a request.
INLINE_LIMIT_BYTES = 14 * 1024 * 1024
#: The Files API's limit per file.
MAX_MEDIA_BYTES = 2 * 1024**3


def normalize_tier(tier: Any) -> str:
    """``flex``/``standard``/``priority`` from any accepted spelling; ValueError otherwise."""
    raw = getattr(tier, "value", tier)
    name = str(raw).strip().lower().removeprefix("service_tier_") if raw is not None else ""
    if name not in TIERS:
        raise ValueError(f"Unknown service tier {tier!r}; use one of {', '.join(TIERS)}")
    return name


@dataclass(frozen=True)
class QuotaLimits:
    """Quotas of one model, as configured (None = not configured)."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    requests_per_day: int | None = None

    @classmethod
    def from_value(cls, value: Any, *, source: str) -> QuotaLimits:
        """From a connection's ``quotas`` entry (a JSON object); errors name ``source`` and the field."""
        if value is None:
            return cls()
        if isinstance(value, QuotaLimits):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"{source} must be a JSON object, got {type(value).__name__}")
        known = {"requests_per_minute", "tokens_per_minute", "requests_per_day"}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        limits = {}
        for name in known:
            raw = value.get(name)
            if raw in (None, ""):
                continue
            try:
                number = float(raw)
                if not number.is_integer() or number < 1:
                    raise ValueError
            except (TypeError, ValueError):
                raise ValueError(f"{source}: {name} must be a whole number >= 1, got {raw!r}") from None
            limits[name] = int(number)
        return cls(**limits)

    def merged(self, override: QuotaLimits) -> QuotaLimits:
        """These limits with ``override``'s configured values taking precedence."""
        return QuotaLimits(
            requests_per_minute=override.requests_per_minute or self.requests_per_minute,
            tokens_per_minute=override.tokens_per_minute or self.tokens_per_minute,
            requests_per_day=override.requests_per_day or self.requests_per_day,
        )
