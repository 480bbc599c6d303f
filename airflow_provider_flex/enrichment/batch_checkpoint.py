"""A batch job's checkpoint: its rows, written under ``output_path`` before the job is created.

Creating a batch job is not idempotent, so every job is checkpointed before it exists (see
``batch_route``): the checkpoint holds its rows' keys, their attempts so far and a display name
derived from the output location, by which a rerun finds a job whose name a crash hid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_flex.enrichment.store import location_digest


def display_name_for(output_path: str, checkpoint_id: str) -> str:
    """Return a job's display name: the output location's fingerprint and the checkpoint, so a rerun knows its own."""
    return f"flex-enrich-{location_digest(output_path, 12)}-{checkpoint_id}"


@dataclass
class BatchCheckpoint:
    """One batch job's rows, written before the job is created and kept until its answers are written."""

    id: str
    display_name: str
    model: str
    attempts: dict[str, int]
    job_name: str | None = None
    input_file: str | None = None
    state: str = "unsubmitted"
    created: float = field(default_factory=time.time)
    reasons: dict[str, str] = field(default_factory=dict)
    #: The watchdog asked the API to cancel the job (past its cutoff): once it ends, its rows go to flex
    #: unless it succeeded after all (a cancel that lost the race), when its answers are collected.
    cancel_requested: bool = False

    @property
    def keys(self) -> list[str]:
        return list(self.attempts)

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchCheckpoint:
        return cls(**data)
