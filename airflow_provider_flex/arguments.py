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
    """Return ``flex``/``standard``/``priority`` from any accepted spelling; ValueError otherwise."""
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
        """Return the limits of a connection's ``quotas`` entry (a JSON object); errors name ``source`` and the field."""
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
        """Return these limits with ``override``'s configured values taking precedence."""
        return QuotaLimits(
            requests_per_minute=override.requests_per_minute or self.requests_per_minute,
            tokens_per_minute=override.tokens_per_minute or self.tokens_per_minute,
            requests_per_day=override.requests_per_day or self.requests_per_day,
        )


#: What GeminiFlexEnrichOperator may do when a per-day quota runs out.
DAILY_QUOTA_ACTIONS = ("fail", "wait")


def check_enrichment_arguments(
    task: str,
    *,
    has_records: bool,
    has_input_path: bool,
    has_input_sql: bool = False,
    input_conn_id: str | None = None,
    max_concurrency: int,
    max_failed_fraction: float,
    on_daily_quota: str,
    route: Any,
    media_fields: Any,
    batch_poll_interval: float,
    sql_conn_id: str | None,
    table: str | None,
    estimated_output_tokens: int | None,
) -> None:
    """GeminiFlexEnrichOperator's arguments that can be checked when the DAG is parsed; ValueError names the one."""
    sources = has_records + has_input_path + has_input_sql
    if sources != 1:
        raise ValueError(f"{task}: give one of records, input_path and input_sql" + (", not more" if sources else ""))
    if has_input_sql and not input_conn_id:
        raise ValueError(f"{task}: input_sql needs input_conn_id (a common-sql connection: PostgreSQL, SQLite...)")
    if max_concurrency < 1:
        raise ValueError(f"{task}: max_concurrency must be at least 1, got {max_concurrency}")
    if not 0.0 <= max_failed_fraction <= 1.0:
        raise ValueError(f"{task}: max_failed_fraction must be in [0, 1], got {max_failed_fraction}")
    if on_daily_quota not in DAILY_QUOTA_ACTIONS:
        raise ValueError(
            f"{task}: on_daily_quota must be one of {', '.join(DAILY_QUOTA_ACTIONS)}, got {on_daily_quota!r}"
        )
    if route != "flex" and media_fields:
        raise ValueError(f"{task}: media_fields work on the flex route only, not route={route!r}")
    if batch_poll_interval <= 0:
        raise ValueError(f"{task}: batch_poll_interval must be positive, got {batch_poll_interval}")
    if bool(sql_conn_id) != bool(table):
        raise ValueError(f"{task}: give sql_conn_id and table together, to load results into SQL")
    if estimated_output_tokens is not None and estimated_output_tokens < 0:
        raise ValueError(f"{task}: estimated_output_tokens must be >= 0")


#: ``context_cache``: one explicit cache per enrichment run when it pays (``auto``), or none (``off``).
CONTEXT_CACHE_MODES = ("auto", "off")
#: What a repeated key in the input does: stop the run, keep its first row (skip the others), or make the
#: others dead letters; what a row whose prompt does not render (or renders empty) does.
ON_DUPLICATE_KEY = ("fail", "keep_first", "dead_letter")
ON_BAD_ROW = ("fail", "dead_letter")


def check_choice(task_id: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    """Fail with a clear error naming the task and the argument when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"Task {task_id!r}: {name} must be one of {list(choices)}, got {value!r}")
