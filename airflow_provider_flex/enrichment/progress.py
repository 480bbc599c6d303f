"""The enrichment's progress line: rows done, rate, ETA, concurrency, cost, refusals, and what holds it back."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_flex.enrichment.pacing import EnrichmentPacer
    from airflow_provider_flex.enrichment.summary import EnrichStats
    from airflow_provider_flex.exceptions import FlexQuotaExhausted
    from airflow_provider_flex.hooks.quota import QuotaLimiter

_QUOTA_WORDS = {"requests_per_minute": "requests/min", "tokens_per_minute": "input tokens/min"}


def describe_pacing(exhausted: FlexQuotaExhausted | None, limiter: QuotaLimiter, pacer: EnrichmentPacer) -> str:
    """Return what holds the run back right now, in words: a quota being paced to, a server pause, a spent day."""
    if exhausted is not None:
        return f"; daily quota spent, waiting for its reset at {exhausted.reset_at:%Y-%m-%d %H:%M} UTC"
    notes = [
        f"pacing to {limit:,} {_QUOTA_WORDS.get(name, name)} ({source})"
        for name, (limit, source) in limiter.known_limits().items()
    ]
    paused = max(limiter.paused_until, pacer.limit.paused_until) - time.monotonic()
    if paused > 0:
        notes.append(f"paused {paused:.0f}s by the server")
    return "; " + ", ".join(notes) if notes else ""


def log_progress(log: Any, stats: EnrichStats, pacer: EnrichmentPacer, note: str, *, batch_landed: int = 0) -> None:
    """Log one progress line of a run: ``batch_landed`` rows answered by batch jobs so far count as done (the
    ETA is flex's: rows waiting in batch jobs are told apart in ``note``)."""
    done = stats.done + batch_landed
    remaining = stats.total - stats.skipped - done
    rate = stats.rows_per_s()
    eta = f"{remaining / rate:.0f}s" if rate else "n/a"
    log.info(
        "Enrichment: %d/%d rows done (%d skipped, %d failed), %.1f rows/s, ETA %s, concurrency %d, "
        "cost $%.4f, 429s %d, 503s %d%s",
        done + stats.skipped,
        stats.total,
        stats.skipped,
        stats.failed,
        rate,
        eta,
        pacer.limit.allowed,
        stats.cost_usd,
        pacer.rate_limited_429,
        pacer.unavailable_503,
        note,
    )
