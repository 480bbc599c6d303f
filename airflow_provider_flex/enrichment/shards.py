"""A large input split into shards for mapped enrichment tasks, and their summaries merged back.

Shards are JSONL files of consecutive rows, written whole (a local file appears
under its name only when complete; on object storage each is one put), with a
manifest naming the input they came from. Splitting the same input again reuses
them, so a rerun of the DAG hands every mapped task the same shard and each
resumes from its own checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_flex.enrichment.records import EnrichInputError, iter_rows, open_text
from airflow_provider_flex.storage import exists, write_whole

MANIFEST = "manifest.json"
#: Summary fields that add up across shards.
SUMMED = ("total", "succeeded", "failed", "skipped", "not_started", "rate_limited_429", "unavailable_503")


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def split_into_shards(input_path: str, shard_root: str, rows_per_shard: int) -> list[str]:
    """Split ``input_path`` (JSONL or CSV, local or object storage) into JSONL shards under ``shard_root``.

    Returns the shard paths in order. If ``shard_root`` already holds the shards of the
    same input (same content fingerprint, same shard size), they are reused untouched.
    """
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
    fingerprint = hashlib.sha256()
    with open_text(input_path) as handle:
        for line in handle:
            fingerprint.update(line.encode("utf-8"))
    source = {"input_path": input_path, "sha256": fingerprint.hexdigest(), "rows_per_shard": rows_per_shard}
    manifest_path = _join(shard_root, MANIFEST)
    if exists(manifest_path):
        with open_text(manifest_path) as handle:
            manifest = json.load(handle)
        if manifest.get("source") == source and all(exists(p) for p in manifest.get("shards", [])):
            return list(manifest["shards"])
    shards: list[str] = []
    batch: list[str] = []

    def flush() -> None:
        path = _join(shard_root, f"shard-{len(shards):05d}.jsonl")
        write_whole(path, "".join(batch))
        shards.append(path)
        batch.clear()

    for _, row in iter_rows(None, input_path):
        batch.append(json.dumps(row, ensure_ascii=False) + "\n")
        if len(batch) >= rows_per_shard:
            flush()
    if batch:
        flush()
    if not shards:
        raise EnrichInputError(f"input_path {input_path!r} has no rows")
    write_whole(manifest_path, json.dumps({"source": source, "shards": shards}, indent=1))
    return shards


def merge_summaries(summaries: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """Return the run in one line: every shard's counts added up, cost summed, each shard's output listed."""
    merged: dict[str, Any] = {field: 0 for field in SUMMED}
    merged.update(cost_usd=0.0, shards=0, outputs=[], daily_quota_exhausted=None)
    for summary in summaries:
        if summary is None:
            raise ValueError("a shard has no summary: its enrichment task did not finish")
        merged["shards"] += 1
        for field in SUMMED:
            merged[field] += int(summary.get(field) or 0)
        merged["cost_usd"] += float(summary.get("cost_usd") or 0.0)
        merged["outputs"].append(summary.get("output_path"))
        merged["daily_quota_exhausted"] = merged["daily_quota_exhausted"] or summary.get("daily_quota_exhausted")
    merged["cost_usd"] = round(merged["cost_usd"], 6)
    return merged
