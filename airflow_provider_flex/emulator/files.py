"""The Gemini API's Files API as the emulator keeps it: resumable uploads, get, delete.

As google-genai's ``client.files.upload`` drives it: ``POST /upload/{v}/files`` with
``X-Goog-Upload-Command: start`` answers an ``x-goog-upload-url``; chunks go to that
URL (``upload``, the last ``upload, finalize``) and the final answer is the file,
``ACTIVE``, with the ``uri`` a ``fileData`` part names. ``GET`` and ``DELETE
/{v}/files/{id}``; files the API made (batch responses) download from ``/{v}/files/{id}:download``. Files stay until deleted (the API keeps them 48 hours).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any


@dataclass
class StoredFile:
    file_id: str
    mime_type: str
    display_name: str | None
    expected_bytes: int
    data: bytearray = field(default_factory=bytearray)
    created: float = field(default_factory=time.time)
    complete: bool = False
    #: Made by the API (a batch job's responses): downloadable, unlike an upload.
    generated: bool = False

    def resource(self, base_url: str, version: str) -> dict[str, Any]:
        created = datetime.fromtimestamp(self.created, timezone.utc)
        body: dict[str, Any] = {
            "name": f"files/{self.file_id}",
            "mimeType": self.mime_type,
            "sizeBytes": str(len(self.data)),
            "createTime": created.isoformat().replace("+00:00", "Z"),
            "updateTime": created.isoformat().replace("+00:00", "Z"),
            "expirationTime": (created + timedelta(hours=48)).isoformat().replace("+00:00", "Z"),
            "sha256Hash": hashlib.sha256(bytes(self.data)).hexdigest(),
            "uri": f"{base_url.rstrip('/')}/{version}/files/{self.file_id}",
            "state": "ACTIVE" if self.complete else "PROCESSING",
            "source": "GENERATED" if self.generated else "UPLOADED",
        }
        if self.generated:
            body["downloadUri"] = f"{base_url.rstrip('/')}/{version}/files/{self.file_id}:download?alt=media"
        if self.display_name:
            body["displayName"] = self.display_name
        return body


class FileStore:
    """Uploaded files by id, and uploads under way by their upload token."""

    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}
        self.uploads: dict[str, StoredFile] = {}
        self.deleted = 0

    def start(self, mime_type: str, display_name: str | None, size: int) -> str:
        """Begin a resumable upload; its token."""
        stored = StoredFile(secrets.token_hex(6), mime_type, display_name, size)
        token = secrets.token_urlsafe(16)
        self.uploads[token] = stored
        return token

    def append(self, token: str, offset: int, chunk: bytes, finalize: bool) -> StoredFile:
        stored = self.uploads.get(token)
        if stored is None:
            raise KeyError("unknown upload")
        if offset != len(stored.data):
            raise ValueError(f"offset {offset} does not follow the {len(stored.data)} bytes received")
        stored.data += chunk
        if finalize:
            stored.complete = True
            del self.uploads[token]
            self.files[stored.file_id] = stored
        return stored

    def add_generated(self, data: bytes, mime_type: str, display_name: str) -> StoredFile:
        """Return a file the API made (a batch job's responses), complete at once."""
        stored = StoredFile(secrets.token_hex(6), mime_type, display_name, len(data), bytearray(data))
        stored.complete = stored.generated = True
        self.files[stored.file_id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        return self.files.get(file_id.removeprefix("files/"))

    def by_uri(self, uri: str) -> StoredFile | None:
        return self.get(uri.rstrip("/").rsplit("/", 1)[-1])

    def delete(self, file_id: str) -> bool:
        removed = self.files.pop(file_id.removeprefix("files/"), None)
        self.deleted += removed is not None
        return removed is not None
