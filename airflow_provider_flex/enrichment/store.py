"""Results out: checkpointed part files under ``output_path``, read back to resume without paying twice.

Result files are ``results-<run>-<part>.jsonl``; dead letters ``failed-<run>.jsonl``.
Each file is written whole (locally: to a hidden temporary name, then renamed;
on object storage: one put), so a crash never leaves a half-written file that
looks complete.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from airflow_provider_flex.enrichment.summary import OutputTotals
from airflow_provider_flex.hooks.results import json_safe
from airflow_provider_flex.storage import is_remote, local_path, object_path, write_whole

RESULT_PREFIX = "results-"
FAILED_PREFIX = "failed"
IMAGES_DIR = "images"
#: ``batch-<id>.json``: a batch job's rows, written before the job is created (see enrichment.batch_route).
BATCH_PREFIX = "batch-"


def result_record(key: str, response: Any, route: str, images: list[str] | None = None) -> dict[str, Any]:
    """One line of a results file: the row's answer, usage, cost, served tier and the route that answered it."""
    return {
        "key": key,
        "text": response.text,
        "parsed": json_safe(response.parsed),
        "usage": dict(vars(response.usage)),
        "service_tier": response.service_tier,
        "route": route,
        "cost_usd": response.cost_usd,
        "standard_cost_usd": response.standard_cost_usd,
        "model": response.model,
        "finish_reason": response.finish_reason,
        "attempts": response.attempts,
        **({"images": images} if images else {}),
    }


class OutputStore:
    """The files of one ``output_path``, local or on object storage."""

    def __init__(self, output_path: str) -> None:
        self.output_path = output_path.rstrip("/")
        self.run_id = uuid.uuid4().hex[:12]
        self._next_part = 1
        self._is_remote = is_remote(output_path)
        if not self._is_remote:
            self._local_dir().mkdir(parents=True, exist_ok=True)

    def _local_dir(self) -> Path:
        return local_path(self.output_path)

    def _entries(self) -> Iterator[tuple[str, Any]]:
        if self._is_remote:
            root = object_path(self.output_path)
            if root.exists():
                for entry in root.iterdir():
                    yield entry.name, entry
            return
        for entry in self._local_dir().iterdir():
            yield entry.name, entry

    def result_files(self) -> list[Any]:
        return sorted(
            (e for name, e in self._entries() if name.endswith(".jsonl") and not name.startswith((FAILED_PREFIX, "."))),
            key=lambda e: e.name,
        )

    def failed_files(self) -> list[Any]:
        return [e for name, e in self._entries() if name.startswith(FAILED_PREFIX) and name.endswith(".jsonl")]

    def scan(self) -> tuple[set[str], OutputTotals]:
        """Keys that already have a result (these rows are skipped, not paid for again), and what every
        result written here so far counted and cost, in one read of the result files."""
        keys: set[str] = set()
        totals = OutputTotals()
        for entry in self.result_files():
            for line in entry.read_text().splitlines():
                if line.strip():
                    result = json.loads(line)
                    keys.add(str(result["key"]))
                    totals.rows += 1
                    totals.cost_usd += result.get("cost_usd") or 0.0
                    totals.standard_cost_usd += result.get("standard_cost_usd") or 0.0
        return keys, totals

    def write_results(self, rows: list[dict[str, Any]]) -> str:
        name = f"{RESULT_PREFIX}{self.run_id}-{self._next_part:05d}.jsonl"
        self._next_part += 1
        self._write(name, rows)
        return name

    def write_failed(self, rows: list[dict[str, Any]]) -> str | None:
        """Replace earlier dead-letter files with this run's (their rows were retried in this run)."""
        earlier = self.failed_files()
        name = f"{FAILED_PREFIX}-{self.run_id}.jsonl"
        if rows:
            self._write(name, rows)
        for entry in earlier:
            if entry.name != name:
                entry.unlink()
        return name if rows else None

    def batch_checkpoints(self) -> list[dict[str, Any]]:
        """The batch jobs this output has rows in (written by :meth:`write_batch_checkpoint`), oldest first."""
        found = [
            json.loads(entry.read_text())
            for name, entry in self._entries()
            if name.startswith(BATCH_PREFIX) and name.endswith(".json")
        ]
        return sorted(found, key=lambda checkpoint: checkpoint["created"])

    def write_batch_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        write_whole(f"{self.output_path}/{BATCH_PREFIX}{checkpoint['id']}.json", json.dumps(checkpoint))

    def remove_batch_checkpoint(self, checkpoint_id: str) -> None:
        for name, entry in self._entries():
            if name == f"{BATCH_PREFIX}{checkpoint_id}.json":
                entry.unlink()

    def write_images(self, key: str, images: Any) -> list[str]:
        """Write a row's generated images under ``images/`` (one file each, named from the key); their locations."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", key)[:80]
        if safe != key:  # two keys that clean up alike must not share files
            safe = f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
        locations = []
        for index, image in enumerate(images):
            name = f"{IMAGES_DIR}/{safe}-{index}{image.extension}"
            self._write_bytes(name, image.data)
            locations.append(f"{self.output_path}/{name}")
        return locations

    def _write_bytes(self, name: str, data: bytes) -> None:
        write_whole(f"{self.output_path}/{name}", data)

    def _write(self, name: str, rows: list[dict[str, Any]]) -> None:
        write_whole(f"{self.output_path}/{name}", "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
