"""A trigger that waits for Gemini Batch API jobs, so an enrichment waiting on them holds no worker slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class GeminiFlexBatchTrigger(BaseTrigger):
    """Fire once any of ``job_names`` has ended, or ``wake_at`` has come (or at once when there is none to watch).

    The enrichment resumes on a worker, writes the ended jobs' answers, resubmits what they did
    not answer and defers again while jobs remain. The trigger carries job names and the
    connection id only, never the key.
    """

    def __init__(
        self,
        job_names: Sequence[str],
        gemini_flex_conn_id: str,
        poll_interval: float = 60.0,
        wake_at: str | None = None,
    ) -> None:
        super().__init__()
        self.job_names = list(job_names)
        self.gemini_flex_conn_id = gemini_flex_conn_id
        self.poll_interval = poll_interval
        #: When the watchdog must look at the jobs (ISO 8601): the task resumes then even if none has ended.
        self.wake_at = wake_at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__name__}",
            {
                "job_names": self.job_names,
                "gemini_flex_conn_id": self.gemini_flex_conn_id,
                "poll_interval": self.poll_interval,
                "wake_at": self.wake_at,
            },
        )

    def _seconds_to_wake(self) -> float | None:
        """Return the seconds until ``wake_at`` (None: no cutoff to keep)."""
        if not self.wake_at:
            return None
        from airflow_provider_flex.compat import parse_datetime

        return (parse_datetime(self.wake_at) - datetime.now(timezone.utc)).total_seconds()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook

        if not self.job_names:  # jobs still to be created (the API refused them for now): look again later
            await asyncio.sleep(self.poll_interval)
            yield TriggerEvent({"status": "poll"})
            return
        hook = GeminiFlexHook(self.gemini_flex_conn_id)
        await hook.aload_settings()
        while True:
            for name in self.job_names:
                try:
                    # google-genai's batch calls are blocking: a thread keeps the triggerer's loop free.
                    state = await asyncio.to_thread(hook.batches.get, name)
                except Exception as exc:
                    yield TriggerEvent({"status": "error", "job": name, "message": str(exc)[:500]})
                    return
                if state.done:  # succeeded, failed, cancelled or expired: the task reads which
                    yield TriggerEvent({"status": "ended", "job": name, "state": state.state})
                    return
            left = self._seconds_to_wake()
            if left is not None and left <= 0:  # a job is past its cutoff: the task cancels it, flex serves its rows
                yield TriggerEvent({"status": "cutoff", "jobs": self.job_names})
                return
            await asyncio.sleep(self.poll_interval if left is None else min(self.poll_interval, max(0.05, left)))
