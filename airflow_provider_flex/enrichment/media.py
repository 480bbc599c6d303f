"""A row's media: the files its media fields name, ready for its prompt, uploaded at most once per run.

Each field's location (a local path, an ``ObjectStoragePath`` URL, or a path under
``media_root``) is found and typed before the row's call, in a thread; a missing,
unreadable, oversize or unsupported file raises MediaError naming the row, the
field and the location, so the row becomes a dead letter and the run goes on. Small
files go inline; larger ones are uploaded through the Files API once per run, shared
by every row that names them, and deleted when the run ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_flex.arguments import INLINE_LIMIT_BYTES
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.media import (
    MAX_MEDIA_BYTES,
    InlineMedia,
    MediaFile,
    UploadedFile,
    probe_media,
    read_inline,
)


class RowMedia:
    """The media fields of an enrichment run."""

    def __init__(
        self,
        hook: GeminiFlexHook,
        fields: Sequence[str],
        *,
        media_root: str | None = None,
        inline_limit: int = INLINE_LIMIT_BYTES,
        max_bytes: int = MAX_MEDIA_BYTES,
    ) -> None:
        self.hook = hook
        self.fields = tuple(fields)
        self.media_root = media_root.rstrip("/") if media_root else None
        self.inline_limit = inline_limit
        self.max_bytes = max_bytes
        self._uploads: dict[str, asyncio.Task[UploadedFile]] = {}

    def location(self, value: Any) -> Any:
        """Return a field's value as a location: relative paths are under ``media_root``."""
        if not isinstance(value, str) or not value.strip() or self.media_root is None:
            return value
        if "://" in value or value.startswith("/"):
            return value
        return f"{self.media_root}/{value}"

    async def for_row(self, row: Mapping[str, Any], *, number: int, key: str) -> list[InlineMedia | UploadedFile]:
        media: list[InlineMedia | UploadedFile] = []
        for field in self.fields:
            what = f"row {number} (key {key!r}) field {field!r}:"
            found = await asyncio.to_thread(
                probe_media, self.location(row.get(field)), what=f"{what} media file", max_bytes=self.max_bytes
            )
            if found.size <= self.inline_limit:
                media.append(await asyncio.to_thread(read_inline, found, what=f"{what} media file"))
            else:
                media.append(await self._uploaded(found))
        return media

    async def _uploaded(self, found: MediaFile) -> UploadedFile:
        task = self._uploads.get(found.location)
        if task is None:
            task = self._uploads[found.location] = asyncio.create_task(asyncio.to_thread(self.hook.upload_file, found))
        return await asyncio.shield(task)

    async def delete_uploads(self) -> int:
        """Delete every file this run uploaded; how many."""
        names = [task.result().name for task in self._uploads.values() if task.done() and not task.exception()]
        if names:
            await asyncio.to_thread(self.hook.delete_files, names)
        return len(names)
