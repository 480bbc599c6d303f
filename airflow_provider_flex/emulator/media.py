"""Media in the emulator: counting image (and other) parts as the API does, and answering with real images.

Token counts follow the Gemini API documentation on tokens
(https://ai.google.dev/gemini-api/docs/tokens): an image with both sides at most
384 pixels is 258 tokens; a larger one is cut into 768x768 tiles of 258 tokens
each; a PDF is 258 tokens a page. Other media (audio, video) are counted as one
258-token part here, as their duration is not read. Generated images are small,
valid PNGs (any PNG decoder opens them), derived from the prompt.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
import zlib
from typing import Any

TOKENS_PER_TILE = 258
SMALL_IMAGE_SIDE = 384
TILE_SIDE = 768
GENERATED_SIDE = 64


def image_size(data: bytes) -> tuple[int, int] | None:
    """Return (width, height) of a PNG, JPEG, GIF or WebP image, read from its header; None if not one of those."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8X" and len(data) >= 30:
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if chunk == b"VP8 " and len(data) >= 30:
            width, height = struct.unpack("<HH", data[26:30])
            return width & 0x3FFF, height & 0x3FFF
        if chunk == b"VP8L" and len(data) >= 25:
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    index = 2
    while index + 9 < len(data):
        if data[index] != 0xFF:
            index += 1
            continue
        marker = data[index + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            height, width = struct.unpack(">HH", data[index + 5 : index + 9])
            return width, height
        length = struct.unpack(">H", data[index + 2 : index + 4])[0]
        index += 2 + length
    return None


def image_tokens(width: int, height: int) -> int:
    if width <= SMALL_IMAGE_SIDE and height <= SMALL_IMAGE_SIDE:
        return TOKENS_PER_TILE
    return math.ceil(width / TILE_SIDE) * math.ceil(height / TILE_SIDE) * TOKENS_PER_TILE


def media_tokens(mime_type: str, data: bytes) -> int:
    """Return prompt tokens of one media part."""
    if mime_type.startswith("image/"):
        size = image_size(data)
        return image_tokens(*size) if size else TOKENS_PER_TILE
    if mime_type.startswith("audio/"):
        return max(1, math.ceil(audio_seconds(mime_type, data) * AUDIO_TOKENS_PER_SECOND))
    if mime_type == "application/pdf":
        pages = len(re.findall(rb"/Type\s*/Page\b", data))
        return max(1, pages) * TOKENS_PER_TILE
    return TOKENS_PER_TILE


#: "Gemini represents each second of audio as 32 tokens" (ai.google.dev/gemini-api/docs/audio, "Count tokens").
AUDIO_TOKENS_PER_SECOND = 32
#: The bit rate assumed for compressed audio whose length the emulator cannot read (128 kbit/s).
COMPRESSED_AUDIO_BYTES_PER_SECOND = 16_000


def audio_seconds(mime_type: str, data: bytes) -> float:
    """Return an audio part's length in seconds: a WAV file's from its header, others from their size at 128 kbit/s."""
    if mime_type in ("audio/wav", "audio/x-wav", "audio/wave") and data[:4] == b"RIFF":
        import io
        import wave

        try:
            with wave.open(io.BytesIO(data)) as sound:
                return sound.getnframes() / float(sound.getframerate() or 1)
        except (wave.Error, EOFError):
            pass
    return len(data) / COMPRESSED_AUDIO_BYTES_PER_SECOND


def decode_inline(part: dict[str, Any]) -> tuple[str, bytes] | None:
    """Return (mime type, bytes) of an ``inlineData`` part, or None."""
    inline = part.get("inlineData") or part.get("inline_data")
    if not isinstance(inline, dict):
        return None
    mime = str(inline.get("mimeType") or inline.get("mime_type") or "application/octet-stream")
    text = str(inline.get("data") or "")
    try:  # google-genai sends the URL-safe alphabet; others the standard one: the API takes both
        return mime, base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4))
    except ValueError:
        return mime, b""


def png(width: int, height: int, seed: str) -> bytes:
    """Return a valid RGB PNG: a gradient whose colours come from ``seed``."""
    digest = hashlib.sha256(seed.encode()).digest()
    base = digest[:3]
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            rows += bytes(((base[0] + x * 3) % 256, (base[1] + y * 3) % 256, (base[2] + (x + y)) % 256))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b"")
    )


def generated_image(prompt: str) -> bytes:
    return png(GENERATED_SIDE, GENERATED_SIDE, prompt)
