"""The part of a prompt every row shares: the system instruction and ``shared_contents``, always first.

``shared_contents`` is text or files every row's prompt starts with (a policy, a glossary, a rubric's
examples, a reference PDF): a string, or a list whose items are strings (text), ``{"text": ...}``,
``{"file": location}`` or path objects (a local path or an ``ObjectStoragePath`` URL). A text file
(UTF-8) becomes text; an image, PDF, audio or video file goes inline, typed by its content. The
shared part stays first in every prompt, so the API's implicit cache can serve it when no explicit
cache is made (``context_cache``); with one, the cache holds it and rows send only their own prompt.
Files are read once, before any call: a missing or unreadable file fails the task naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_flex.arguments import INLINE_LIMIT_BYTES
from airflow_provider_flex.media import MediaError, open_media, probe_media, read_inline, sniff_mime_type


@dataclass(frozen=True)
class SharedPrefix:
    """What every row's request starts with: the system instruction, then the shared contents' parts."""

    system_instruction: str | None = None
    #: ``shared_contents`` as Gemini parts: ``{"text": ...}`` or ``{"inline_data": {"mime_type", "data"}}``.
    parts: tuple[Mapping[str, Any], ...] = ()

    def row_contents(self, prompt: Any) -> Any:
        """Return a row's contents with the shared parts first (the row's prompt alone when there are none)."""
        if not self.parts:
            return prompt
        own = [{"text": prompt}] if isinstance(prompt, str) else _parts_of(prompt)
        return [{"role": "user", "parts": [*self.parts, *own]}]

    def cache_contents(self) -> list[dict[str, Any]] | None:
        """Return the shared parts as the contents of a cache (None without any)."""
        return [{"role": "user", "parts": list(self.parts)}] if self.parts else None

    def counted_contents(self) -> list[dict[str, Any]]:
        """Return the whole shared part as contents for ``countTokens`` (the instruction as text, then the parts)."""
        parts = ([{"text": self.system_instruction}] if self.system_instruction else []) + list(self.parts)
        return [{"role": "user", "parts": parts}] if parts else []

    def digest(self) -> str | None:
        """Return a hash of the shared contents (None without any): a cache made for other contents is not reused."""
        if not self.parts:
            return None
        return digest_of({"system_instruction": self.system_instruction, "parts": list(self.parts)})

    def describe(self) -> str:
        """Return the shared contents as a run's fingerprint records them (text, and files by type and hash)."""
        return json.dumps([_part_summary(p) for p in self.parts], sort_keys=True) if self.parts else ""


def digest_of(value: Any) -> str:
    """Return a short, stable hash of JSON-like data (bytes by their own hash)."""

    def default(item: Any) -> str:
        return hashlib.sha256(item).hexdigest() if isinstance(item, bytes | bytearray) else str(item)

    return hashlib.sha256(json.dumps(value, sort_keys=True, default=default).encode()).hexdigest()[:16]


def load_shared_contents(task: str, value: Any) -> tuple[Mapping[str, Any], ...]:
    """Return ``shared_contents`` as Gemini parts, reading its files now; ValueError naming the item otherwise."""
    if value is None or value == "" or value == []:
        return ()
    items = [value] if isinstance(value, str | os.PathLike | Mapping) else value
    if not isinstance(items, Sequence):
        raise ValueError(f"{task}: shared_contents must be text, a file or a list of them, got {type(value).__name__}")
    parts = []
    for index, item in enumerate(items):
        where = f"{task}: shared_contents[{index}]"
        if isinstance(item, str):
            if item.strip():
                parts.append({"text": item})
        elif isinstance(item, os.PathLike) or (isinstance(item, Mapping) and "file" in item):
            parts.append(_file_part(where, os.fspath(item) if isinstance(item, os.PathLike) else str(item["file"])))
        elif isinstance(item, Mapping) and isinstance(item.get("text"), str):
            parts.append({"text": item["text"]})
        else:
            raise ValueError(f"{where} must be text, {{'text': ...}}, {{'file': location}} or a path, got {item!r:.80}")
    return tuple(parts)


def _file_part(where: str, location: str) -> dict[str, Any]:
    """Return one shared file as a part: UTF-8 text as text, a media type Gemini takes inline."""
    try:
        with open_media(location) as handle:
            data = handle.read(INLINE_LIMIT_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"{where}: file {location!r} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{where}: file {location!r} cannot be read: {exc}") from None
    if len(data) > INLINE_LIMIT_BYTES:
        raise ValueError(f"{where}: file {location!r} is larger than the {INLINE_LIMIT_BYTES // 2**20} MB a "
                         "shared file may take inline")  # fmt: skip
    if sniff_mime_type(data[:64], location) in (None, "text/plain"):
        try:
            return {"text": data.decode("utf-8")}
        except UnicodeDecodeError:
            pass
    try:
        inline = read_inline(probe_media(location, what=where))
    except MediaError as exc:
        raise ValueError(str(exc)) from None
    return {"inline_data": {"mime_type": inline.mime_type, "data": inline.data}}


def _parts_of(contents: Any) -> list[Any]:
    """Return a row prompt's parts (a row prompt given as contents rather than text)."""
    if isinstance(contents, Mapping):
        return list(contents.get("parts", [contents]))
    return [part for content in contents for part in (content.get("parts", [content]) if isinstance(content, Mapping)
                                                      else [content])]  # fmt: skip


def _part_summary(part: Mapping[str, Any]) -> Any:
    if "text" in part:
        return part["text"]
    inline = part["inline_data"]
    return {"mime_type": inline["mime_type"], "sha256": hashlib.sha256(inline["data"]).hexdigest()}
