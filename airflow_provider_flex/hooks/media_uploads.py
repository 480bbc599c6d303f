"""The hook's media files: a prompt's images, audio, video and PDFs sent inline or through the Files API.

A mixin of :class:`~airflow_provider_flex.hooks.gemini_flex.GeminiFlexHook` (it uses the hook's
``client``, ``settings`` and ``log``): the sync and async calls share one set-up and one clean-up,
:meth:`MediaUploads._prompt_with_media` and its async twin, which delete what they uploaded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_flex.arguments import INLINE_LIMIT_BYTES
from airflow_provider_flex.hooks.retry import single_call_error
from airflow_provider_flex.media import (
    InlineMedia,
    MediaError,
    MediaFile,
    UploadedFile,
    open_media,
    probe_media,
    read_inline,
)

if TYPE_CHECKING:
    import logging

    from google import genai

    from airflow_provider_flex.hooks.connection import ConnectionSettings


class MediaUploads:
    """Media set-up and clean-up for a hook's calls (see the module docstring)."""

    client: genai.Client
    settings: ConnectionSettings
    log: logging.Logger

    @contextlib.contextmanager
    def _prompt_with_media(self, contents: Any, media: Sequence[Any] | None) -> Iterator[Any]:
        """Yield the prompt with its media as parts for the block; files uploaded for it are deleted after."""
        items, uploads = self.prepare_media(media)
        try:
            yield contents_with_media(contents, items)
        finally:
            self.delete_files(uploads)

    @contextlib.asynccontextmanager
    async def _aprompt_with_media(self, contents: Any, media: Sequence[Any] | None) -> AsyncIterator[Any]:
        """:meth:`_prompt_with_media` with the file work in a thread, off the event loop."""
        items, uploads = await asyncio.to_thread(self.prepare_media, media) if media else ([], [])
        try:
            yield contents_with_media(contents, items)
        finally:
            if uploads:
                await asyncio.to_thread(self.delete_files, uploads)

    def prepare_media(self, media: Sequence[Any] | None) -> tuple[list[InlineMedia | UploadedFile], list[str]]:
        """Return media ready for a prompt, and the names of the files uploaded for it (to delete after the call).

        Locations are found and typed first (MediaError names a missing, unreadable, oversize or
        unsupported file); a file up to INLINE_LIMIT_BYTES travels inline, a larger one is uploaded
        through the Files API. Blocking: the async paths run it in a thread.
        """
        items: list[InlineMedia | UploadedFile] = []
        uploads: list[str] = []
        for item in media or []:
            if isinstance(item, InlineMedia | UploadedFile):
                items.append(item)
                continue
            found = item if isinstance(item, MediaFile) else probe_media(str(item))
            if found.size <= INLINE_LIMIT_BYTES:
                items.append(read_inline(found))
            else:
                uploaded = self.upload_file(found)
                items.append(uploaded)
                uploads.append(uploaded.name)
        return items, uploads

    def upload_file(self, media: MediaFile) -> UploadedFile:
        """Upload a file through the Files API (the Gemini API's; Vertex AI takes Cloud Storage URIs)."""
        if self.settings.vertex is not None:
            raise MediaError(
                f"media file {media.location!r} is {media.size / 2**20:.1f} MB, too large to send inline; Vertex AI "
                "takes larger files by Cloud Storage URI, not the Files API"
            )
        with open_media(media.location) as handle:
            uploaded = self.client.files.upload(
                file=handle,
                config={"mime_type": media.mime_type, "display_name": media.location.rsplit("/", 1)[-1][:100]},
            )
        return UploadedFile(str(uploaded.name), str(uploaded.uri), media.mime_type)

    def delete_files(self, names: Sequence[str]) -> None:
        """Delete uploaded files; one that is already gone is logged, not raised."""
        for name in names:
            try:
                self.client.files.delete(name=name)
            except Exception as exc:
                self.log.warning("Could not delete uploaded file %s: %s", name, single_call_error(exc))


def contents_with_media(contents: Any, media: list[InlineMedia | UploadedFile]) -> Any:
    """Return the prompt with its media as further parts: inline bytes, or an uploaded file by URI."""
    if not media:
        return contents
    from google.genai import types

    parts = [
        types.Part.from_bytes(data=item.data, mime_type=item.mime_type)
        if isinstance(item, InlineMedia)
        else types.Part.from_uri(file_uri=item.uri, mime_type=item.mime_type)
        for item in media
    ]
    head = list(contents) if isinstance(contents, list | tuple) else [contents]
    return [*head, *parts]
