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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_flex.enrichment.keys import KeySet
from airflow_provider_flex.hooks.results import json_safe
from airflow_provider_flex.storage import is_remote, local_path, object_path, write_lines, write_whole

if TYPE_CHECKING:
    from airflow_provider_flex.enrichment.failures import DeadLetters

RESULT_PREFIX = "results-"
FAILED_PREFIX = "failed"
IMAGES_DIR = "images"
#: ``batch-<id>.json``: a batch job's rows, written before the job is created (see enrichment.batch_route).
BATCH_PREFIX = "batch-"
#: What defines the answers in this output (see enrichment.fingerprint), and where a changed request's
#: earlier output is set aside.
REQUEST_FILE = "request.json"
#: The run's explicit context cache (see ``context_cache``): its name, checkpointed before first use.
CACHE_CHECKPOINT_FILE = "context_cache.json"
#: How long this output's finished batch jobs took (seconds), for planning the next runs' deadlines.
TURNAROUNDS_FILE = "batch_turnarounds.json"
TURNAROUNDS_KEPT = 20
SUPERSEDED_DIR = "superseded"


@dataclass
class OutputTotals:
    """Everything every run so far wrote to one ``output_path`` (a rerun's own figures cover only itself)."""

    rows: int = 0
    cost_usd: float = 0.0
    standard_cost_usd: float = 0.0


def location_digest(output_path: str, chars: int) -> str:
    """Return the first ``chars`` hex digits of the output location's SHA-256: what names the run's batch jobs
    and context cache at the API, so a rerun after a crash finds its own (never the location itself)."""
    return hashlib.sha256(output_path.rstrip("/").encode()).hexdigest()[:chars]


def result_record(key: str, response: Any, route: str, images: list[str] | None = None) -> dict[str, Any]:
    """Return one line of a results file: the row's answer, usage, cost, served tier and the route that answered it."""
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

    def __init__(self, output_path: str, *, create: bool = True) -> None:
        """Open ``output_path``; a local folder is made unless ``create`` is false (a reader's store)."""
        self.output_path = output_path.rstrip("/")
        self.run_id = uuid.uuid4().hex[:12]
        self._next_part = 1
        self._is_remote = is_remote(output_path)
        if create and not self._is_remote:
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

    def scan(self) -> tuple[KeySet, OutputTotals]:
        """Return keys that already have a result (these rows are skipped, not paid for again), and what every
        result written here so far counted and cost, in one read of the result files. The keys are held as
        hashes (:class:`~.keys.KeySet`): a million answered keys take 16 MB, not the 100 MB of a set."""
        keys = KeySet()
        totals = OutputTotals()
        for result in self.results():
            keys.add(str(result["key"]))
            totals.rows += 1
            totals.cost_usd += result.get("cost_usd") or 0.0
            totals.standard_cost_usd += result.get("standard_cost_usd") or 0.0
        return keys, totals

    def results(self) -> Iterator[dict[str, Any]]:
        """Return every result line written here, one at a time, in file order."""
        for entry in self.result_files():
            for line in entry.read_text().splitlines():
                if line.strip():
                    yield json.loads(line)

    def dead_letters(self) -> Iterator[dict[str, Any]]:
        """Return the current dead letters (the last run's ``failed-*.jsonl``), one at a time."""
        for entry in self.failed_files():
            for line in entry.read_text().splitlines():
                if line.strip():
                    yield json.loads(line)

    def write_results(self, rows: list[dict[str, Any]]) -> str:
        name = f"{RESULT_PREFIX}{self.run_id}-{self._next_part:05d}.jsonl"
        self._next_part += 1
        self._write(name, rows)
        return name

    def write_failed(self, rows: DeadLetters) -> str | None:
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
        """Return the batch jobs this output has rows in (written by :meth:`write_batch_checkpoint`), oldest first."""
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

    def batch_turnarounds(self) -> list[float]:
        """Return the seconds this output's finished batch jobs took, oldest first (``batch_turnarounds.json``)."""
        for name, entry in self._entries():
            if name == TURNAROUNDS_FILE:
                try:
                    return [float(x) for x in json.loads(entry.read_text())]
                except (ValueError, TypeError):
                    return []
        return []

    def record_batch_turnaround(self, seconds: float) -> None:
        """Add a finished job's turnaround to what the next runs plan with (the last 20 are kept)."""
        kept = [*self.batch_turnarounds(), round(seconds, 1)][-TURNAROUNDS_KEPT:]
        write_whole(f"{self.output_path}/{TURNAROUNDS_FILE}", json.dumps(kept))

    def read_cache_checkpoint(self) -> dict[str, Any] | None:
        """Return the run's context-cache checkpoint (``context_cache.json``: its name and digest), or None."""
        for name, entry in self._entries():
            if name == CACHE_CHECKPOINT_FILE:
                try:
                    return json.loads(entry.read_text())
                except json.JSONDecodeError:
                    return {}
        return None

    def write_cache_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        write_whole(f"{self.output_path}/{CACHE_CHECKPOINT_FILE}", json.dumps(checkpoint))

    def remove_cache_checkpoint(self) -> None:
        for name, entry in self._entries():
            if name == CACHE_CHECKPOINT_FILE:
                entry.unlink()

    def read_request(self) -> dict[str, Any] | None:
        """Return the request fingerprint recorded here (``request.json``), or None when there is none."""
        for name, entry in self._entries():
            if name == REQUEST_FILE:
                return json.loads(entry.read_text())
        return None

    def write_request(self, fingerprint: dict[str, str]) -> None:
        write_whole(f"{self.output_path}/{REQUEST_FILE}", json.dumps({"fingerprint": fingerprint}, sort_keys=True))

    def has_output(self) -> bool:
        """Return whether any run wrote results, dead letters or batch checkpoints here."""
        return any(self._is_output(name) for name, _ in self._entries())

    def set_aside(self) -> str:
        """Move every result, dead letter, batch checkpoint and the request file into ``superseded/<run>/``
        (kept, never deleted); return that folder. A rerun under a changed request then starts afresh."""
        folder = f"{SUPERSEDED_DIR}/{self.run_id}"
        for name, entry in list(self._entries()):
            if self._is_output(name) or name == REQUEST_FILE:
                target = f"{self.output_path}/{folder}/{name}"
                if self._is_remote:
                    entry.rename(object_path(target))
                else:
                    local_path(target).parent.mkdir(parents=True, exist_ok=True)
                    entry.rename(local_path(target))
        return f"{self.output_path}/{folder}"

    @staticmethod
    def _is_output(name: str) -> bool:
        return not name.startswith(".") and (
            (name.endswith(".jsonl") and name.startswith((RESULT_PREFIX, FAILED_PREFIX)))
            or (name.startswith(BATCH_PREFIX) and name.endswith(".json"))
        )

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

    def _write(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        write_lines(f"{self.output_path}/{name}", (json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_results(output_path: str, *, include_failed: bool = False, as_dataframe: bool = False) -> Any:
    """Return an enrichment's answers under ``output_path`` as a list of dicts, one per row, in file order.

    Each dict is a result line (``key``, ``text``, ``parsed``, ``usage``, ``model``, ``service_tier``,
    ``route``, ``cost_usd``, ...) with ``status: "ok"``. With ``include_failed`` the current dead letters
    follow, with ``status: "failed"`` and their ``error`` (and ``error_kind``). With ``as_dataframe`` a
    pandas DataFrame instead (pandas must be installed). Output set aside under ``superseded/`` is not read.
    :func:`iter_results` gives the same rows one at a time.
    """
    rows = list(iter_results(output_path, include_failed=include_failed))
    if not as_dataframe:
        return rows
    try:
        import pandas
    except ImportError:
        raise ImportError("read_results(as_dataframe=True) needs pandas: pip install pandas") from None
    return pandas.DataFrame(rows)


def iter_results(output_path: str, *, include_failed: bool = False) -> Iterator[dict[str, Any]]:
    """Return :func:`read_results`' rows one at a time (a million rows never in memory at once)."""
    store = OutputStore(output_path, create=False)
    if not is_remote(output_path) and not local_path(output_path).is_dir():
        raise FileNotFoundError(f"read_results: no enrichment output at {output_path}")
    return _results_of(store, include_failed)


def _results_of(store: OutputStore, include_failed: bool) -> Iterator[dict[str, Any]]:
    for result in store.results():
        yield {**result, "status": "ok"}
    if include_failed:
        for letter in store.dead_letters():
            yield {**letter, "status": "failed"}
