"""Media for a prompt: files at local paths or ObjectStoragePath URLs, typed by their content.

A file's MIME type is read from its first bytes (its signature), not its name
alone; a file of a type Gemini does not take, missing, unreadable or too large is
refused with an error naming it, before any call. Small files travel inline in the
request; larger ones go through the Files API (the hook uploads them).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from airflow_provider_flex.arguments import MAX_MEDIA_BYTES
from airflow_provider_flex.storage import is_remote, local_path, object_path

#: The types Gemini takes as prompt parts (https://ai.google.dev/gemini-api/docs: image, document, audio, video).
SUPPORTED_MIME_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/heic",
        "image/heif",
        "application/pdf",
        "text/plain",
        "audio/wav",
        "audio/mp3",
        "audio/aiff",
        "audio/aac",
        "audio/ogg",
        "audio/flac",
        "video/mp4",
        "video/mpeg",
        "video/quicktime",
        "video/webm",
    }
)

#: (offset, signature, MIME type): the first bytes that name a type.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"BM", "image/bmp"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"ID3", "audio/mp3"),
    (0, b"\xff\xfb", "audio/mp3"),
    (0, b"fLaC", "audio/flac"),
    (0, b"OggS", "audio/ogg"),
    (0, b"\x1a\x45\xdf\xa3", "video/webm"),
    (0, b"PK\x03\x04", "application/zip"),
)


class MediaError(ValueError):
    """A media file that cannot go into a prompt; the message names it."""


@dataclass(frozen=True)
class MediaFile:
    """A media file found and typed: where it is, what it is, how large."""

    location: str
    mime_type: str
    size: int


@dataclass(frozen=True)
class InlineMedia:
    """Media bytes to send inline."""

    mime_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class UploadedFile:
    """A file uploaded through the Files API, named by its URI in a prompt."""

    name: str
    uri: str
    mime_type: str


def sniff_mime_type(head: bytes, location: str) -> str | None:
    """Return the type the content says it is; for formats without a signature, the name's type if the content agrees."""
    for offset, signature, mime in _SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            return mime
    if head[:4] == b"RIFF" and len(head) >= 12:
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}.get(head[8:12])
    if head[4:8] == b"ftyp" and len(head) >= 12:
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis"):
            return "image/heic"
        if brand in (b"mif1", b"msf1"):
            return "image/heif"
        if brand == b"qt  ":
            return "video/quicktime"
        return "video/mp4"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    guessed = mimetypes.guess_type(location.split("?", 1)[0])[0]
    if guessed == "text/plain":
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return guessed
    return None


def media_locations(media: str | Iterable[Any] | None) -> list[str] | None:
    """Return a task's rendered ``media`` as a list of locations (a single location is a list of one), or None."""
    if not media:
        return None
    return [media] if isinstance(media, str) else [str(location) for location in media]


@contextmanager
def open_media(location: str) -> Iterator[IO[bytes]]:
    """Open a local path or an ``ObjectStoragePath`` URL (``s3://``, ``gs://``, ``file://``) for bytes."""
    if is_remote(location):
        with object_path(location).open("rb") as handle:
            yield handle
        return
    with open(local_path(location), "rb") as handle:
        yield handle


def _size(location: str) -> int:
    if is_remote(location):
        return int(object_path(location).stat().st_size)
    return local_path(location).stat().st_size


def probe_media(location: str, *, what: str = "media file", max_bytes: int = MAX_MEDIA_BYTES) -> MediaFile:
    """Find and type a media file, reading only its first bytes; MediaError naming ``what`` and the location."""
    if not isinstance(location, str) or not location.strip():
        raise MediaError(f"{what} has no file location (got {location!r})")
    try:
        size = _size(location)
        with open_media(location) as handle:
            head = handle.read(64)
    except FileNotFoundError:
        raise MediaError(f"{what} {location!r} does not exist") from None
    except (OSError, ValueError) as exc:
        raise MediaError(f"{what} {location!r} cannot be read: {exc}") from None
    if size > max_bytes:
        raise MediaError(f"{what} {location!r} is {size / 2**20:.1f} MB, above the {max_bytes / 2**20:.1f} MB allowed")
    mime = sniff_mime_type(head, location)
    if mime not in SUPPORTED_MIME_TYPES:
        shown = mime or "of an unknown type"
        raise MediaError(
            f"{what} {location!r} is {shown}, which Gemini does not take as a prompt part "
            f"(supported: {', '.join(sorted(SUPPORTED_MIME_TYPES))})"
        )
    return MediaFile(location, mime, size)


def read_inline(media: MediaFile, *, what: str = "media file") -> InlineMedia:
    """Return the file's bytes, to send inline."""
    try:
        with open_media(media.location) as handle:
            return InlineMedia(media.mime_type, handle.read())
    except (OSError, ValueError) as exc:
        raise MediaError(f"{what} {media.location!r} cannot be read: {exc}") from None
