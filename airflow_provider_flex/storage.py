"""Where files live: a local path (or ``file://`` URL), or an object-storage URL that ``ObjectStoragePath`` opens."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath


def is_remote(location: str) -> bool:
    """Return an object-storage URL (``s3://``, ``gs://``, ...), not a local path or ``file://`` URL."""
    return "://" in location and not location.startswith("file://")


def local_path(location: str) -> Path:
    """Return a local path or ``file://`` URL as a path."""
    return Path(location.removeprefix("file://"))


def object_path(location: str) -> ObjectStoragePath:
    """Return an object-storage URL as Airflow's ``ObjectStoragePath`` (imported only when one is used)."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(location)


def exists(location: str) -> bool:
    return object_path(location).exists() if is_remote(location) else local_path(location).exists()


def write_whole(location: str, data: str | bytes) -> None:
    """Write a whole file at once: a local one appears under its name only when complete (write, then rename);
    an object is one put. Text is written as UTF-8."""
    if is_remote(location):
        target = object_path(location)
        if isinstance(data, bytes):
            target.write_bytes(data)
        else:
            target.write_text(data)
        return
    path = local_path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    if isinstance(data, bytes):
        partial.write_bytes(data)
    else:
        partial.write_text(data, encoding="utf-8")
    partial.replace(path)
