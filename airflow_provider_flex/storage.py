"""Where files live: a local path (or ``file://`` URL), or an object-storage URL that ``ObjectStoragePath`` opens."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
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
    if isinstance(data, str):
        write_lines(location, (data,))
    elif is_remote(location):
        object_path(location).write_bytes(data)
    else:
        with _complete_when_closed(local_path(location)) as partial:
            partial.write_bytes(data)


def write_lines(location: str, lines: Iterable[str]) -> None:
    """Write text lines: to a local file as they come (it appears under its name only when complete: write,
    then rename); to an object as one put once every line is made (a writer left open by an error would
    still upload the part written, and an object store has no cheap rename)."""
    if is_remote(location):
        object_path(location).write_text("".join(lines), encoding="utf-8")
        return
    with _complete_when_closed(local_path(location)) as partial, partial.open("w", encoding="utf-8") as handle:
        handle.writelines(lines)


@contextlib.contextmanager
def _complete_when_closed(path: Path) -> Iterator[Path]:
    """Return a hidden partial file beside ``path``, renamed to ``path`` once written without an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    yield partial
    partial.replace(path)
