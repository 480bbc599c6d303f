"""A deterministic stand-in for the language model: no weights, no network.

The answer is a pure function of the prompt, so tests can compare runs, and
token counts use one tokenizer everywhere, so ``countTokens`` and
``usageMetadata`` always agree. With a response schema the answer is JSON that
validates against it, so structured-output pipelines run end to end.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Mapping
from typing import Any

_TOKEN_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)
#: Tokens charged for a non-text part (an image, a file), as the API does.
NON_TEXT_PART_TOKENS = 258

_VOCABULARY: tuple[str, ...] = tuple(
    (
        "data pipeline flex tier capacity queue batch record enrichment model answer summary "
        "category product customer signal quality review trend region market value price "
        "report insight metric result update profile segment support order quarter growth "
        "risk feature label score source table field detail season stock supplier shipment "
        "warehouse retail online premium standard "
    ).split()
)

_MAX_SCHEMA_DEPTH = 8


def count_tokens(text: str) -> int:
    """Return tokens in ``text``: words and single punctuation marks."""
    return sum(1 for _ in _TOKEN_RE.finditer(text))


def truncate_to_tokens(text: str, limit: int) -> str:
    """Return the prefix of ``text`` holding exactly its first ``limit`` tokens."""
    if limit <= 0:
        return ""
    end = 0
    for index, match in enumerate(_TOKEN_RE.finditer(text)):
        if index == limit:
            break
        end = match.end()
    else:
        return text
    return text[:end]


def split_into_chunks(text: str, tokens_per_chunk: int) -> list[str]:
    """Split ``text`` into consecutive pieces of about ``tokens_per_chunk`` tokens."""
    bounds = [m.start() for i, m in enumerate(_TOKEN_RE.finditer(text)) if i and i % tokens_per_chunk == 0]
    starts = [0, *bounds]
    ends = [*bounds, len(text)]
    return [text[s:e] for s, e in zip(starts, ends, strict=False)] or [text]


def content_text(contents: Any) -> tuple[str, int]:
    """Return concatenated text of Gemini ``contents`` and the count of non-text parts."""
    texts: list[str] = []
    other_parts = 0
    for content in _as_list(contents):
        parts = content.get("parts", []) if isinstance(content, Mapping) else []
        for part in _as_list(parts):
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                other_parts += 1
    return "\n".join(texts), other_parts


def prompt_tokens(
    contents: Any, system_instruction: Any = None, part_tokens: Callable[[Mapping[str, Any]], int] | None = None
) -> int:
    """Return prompt tokens as the emulator bills them: contents plus system instruction.

    ``part_tokens`` counts a non-text part (an image, a file); NON_TEXT_PART_TOKENS each by default.
    """
    return sum(tokens for _, tokens in prompt_part_tokens(contents, system_instruction, part_tokens))


def prompt_part_tokens(
    contents: Any, system_instruction: Any = None, part_tokens: Callable[[Mapping[str, Any]], int] | None = None
) -> list[tuple[str, int]]:
    """Return each prompt part's modality (TEXT, IMAGE, AUDIO, VIDEO, DOCUMENT) and tokens, system instruction first.

    The order is the prompt's: a cache (explicit, or the implicit cache's shared start) holds its first tokens.
    """
    counted: list[tuple[str, int]] = []
    for block in (system_instruction, contents):
        for content in _as_list(block):
            parts = content.get("parts", []) if isinstance(content, Mapping) else []
            for part in _as_list(parts):
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    counted.append(("TEXT", count_tokens(part["text"])))
                elif part_tokens is not None and isinstance(part, Mapping):
                    counted.append((part_modality(part), part_tokens(part)))
                else:
                    counted.append((part_modality(part), NON_TEXT_PART_TOKENS))
    return counted


#: The modality a MIME type's part is counted as in ``promptTokensDetails`` (the API's MediaModality).
_MODALITY_BY_TYPE = (("image/", "IMAGE"), ("audio/", "AUDIO"), ("video/", "VIDEO"), ("application/pdf", "DOCUMENT"))


def part_modality(part: Any) -> str:
    """Return the ``MediaModality`` of a non-text part from its MIME type (``inlineData`` or ``fileData``)."""
    if not isinstance(part, Mapping):
        return "TEXT"
    media = part.get("inlineData") or part.get("inline_data") or part.get("fileData") or part.get("file_data") or {}
    mime = str(media.get("mimeType") or media.get("mime_type") or "") if isinstance(media, Mapping) else ""
    for prefix, modality in _MODALITY_BY_TYPE:
        if mime.startswith(prefix):
            return modality
    return "DOCUMENT" if mime else "TEXT"


def tokens_by_modality(counted: list[tuple[str, int]], first: int | None = None) -> list[dict[str, Any]]:
    """Return ``[{modality, tokenCount}]`` for the counted parts, or for their first ``first`` tokens only."""
    totals: dict[str, int] = {}
    left = first
    for modality, tokens in counted:
        take = tokens if left is None else min(tokens, left)
        if take:
            totals[modality] = totals.get(modality, 0) + take
        if left is not None:
            left -= take
            if left <= 0:
                break
    return [{"modality": modality, "tokenCount": tokens} for modality, tokens in totals.items()]


def parts_summary(contents: Any) -> list[dict[str, Any]]:
    """Return each part of ``contents`` as the call log shows it: its kind, MIME type and size."""
    summary: list[dict[str, Any]] = []
    for content in _as_list(contents):
        parts = content.get("parts", []) if isinstance(content, Mapping) else []
        for part in _as_list(parts):
            if not isinstance(part, Mapping):
                continue
            if isinstance(part.get("text"), str):
                summary.append({"type": "text", "chars": len(part["text"])})
            elif isinstance(part.get("inlineData") or part.get("inline_data"), Mapping):
                inline = part.get("inlineData") or part.get("inline_data")
                data = str(inline.get("data") or "").rstrip("=")
                summary.append(
                    {
                        "type": "inline_data",
                        "mime_type": inline.get("mimeType") or inline.get("mime_type"),
                        "bytes": len(data) * 3 // 4,
                    }
                )
            elif isinstance(part.get("fileData") or part.get("file_data"), Mapping):
                file_data = part.get("fileData") or part.get("file_data")
                summary.append(
                    {
                        "type": "file_data",
                        "mime_type": file_data.get("mimeType") or file_data.get("mime_type"),
                        "file_uri": file_data.get("fileUri") or file_data.get("file_uri"),
                    }
                )
            else:
                summary.append({"type": next(iter(part), "unknown")})
    return summary


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _rng_for(prompt: str, salt: str = "") -> random.Random:
    digest = hashlib.sha256(f"{salt}\x00{prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def text_answer(prompt: str, *, min_tokens: int = 24, max_tokens: int = 96, model: str = "") -> str:
    """Return a plain-text answer derived from the prompt and the model: two models answer a prompt differently,
    each always the same way (so an evaluation comparing models has something to compare)."""
    rng = _rng_for(prompt, f"text:{model}")
    target = rng.randint(min_tokens, max(min_tokens, max_tokens))
    echo = " ".join(_TOKEN_RE.findall(prompt)[:8])
    sentences: list[str] = [f"Flex emulator answer to: {echo}." if echo else "Flex emulator answer."]
    while count_tokens(" ".join(sentences)) < target:
        words = [rng.choice(_VOCABULARY) for _ in range(rng.randint(5, 12))]
        sentences.append(" ".join(words).capitalize() + ".")
    return truncate_to_tokens(" ".join(sentences), target)


def thoughts_tokens(prompt: str, thinking_budget: int | None) -> int:
    """Return thinking tokens billed for the answer: none when thinking is off (budget 0)."""
    if thinking_budget == 0:
        return 0
    natural = 16 + _rng_for(prompt, "thoughts").randint(0, 48)
    return natural if thinking_budget is None or thinking_budget < 0 else min(natural, thinking_budget)


def json_answer(prompt: str, schema: Mapping[str, Any], *, model: str = "") -> str:
    """Return a JSON document derived from the prompt and the model that validates against ``schema``.

    Accepts the OpenAPI form the API calls ``responseSchema`` (upper-case types,
    ``nullable``) and JSON Schema (``responseJsonSchema``, with ``$defs`` and
    ``$ref``). ``pattern`` constraints are not honoured.
    """
    rng = _rng_for(prompt, f"json:{model}")
    instance = _instance(schema, rng, root=schema, depth=0, name="value")
    return json.dumps(instance, ensure_ascii=False)


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    seen = 0
    while isinstance(schema, Mapping) and "$ref" in schema and seen < _MAX_SCHEMA_DEPTH:
        target: Any = root
        for segment in str(schema["$ref"]).removeprefix("#/").split("/"):
            target = target.get(segment, {}) if isinstance(target, Mapping) else {}
        schema = target
        seen += 1
    return schema if isinstance(schema, Mapping) else {}


def _schema_type(schema: Mapping[str, Any]) -> str | None:
    declared = schema.get("type")
    if isinstance(declared, list):
        non_null = [t for t in declared if str(t).lower() != "null"]
        declared = non_null[0] if non_null else "null"
    if declared is None:
        if "properties" in schema:
            return "object"
        if "items" in schema:
            return "array"
        return None
    return str(declared).lower()


def _instance(schema: Mapping[str, Any], rng: random.Random, *, root: Mapping[str, Any], depth: int, name: str) -> Any:
    schema = _resolve(schema, root)
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = [_resolve(o, root) for o in schema.get(combinator) or []]
        non_null = [o for o in options if _schema_type(o) != "null"]
        if options:
            return _instance(non_null[0] if non_null else options[0], rng, root=root, depth=depth, name=name)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(list(schema["enum"]))
    kind = _schema_type(schema)
    if kind == "object":
        if depth >= _MAX_SCHEMA_DEPTH:
            return {}
        properties: Mapping[str, Any] = schema.get("properties") or {}
        order = schema.get("propertyOrdering") or schema.get("property_ordering") or list(properties)
        return {
            key: _instance(properties[key], rng, root=root, depth=depth + 1, name=key)
            for key in order
            if key in properties
        }
    if kind == "array":
        low = int(schema.get("minItems", 1))
        high = max(low, int(schema.get("maxItems", max(low, 3))))
        items = schema.get("items") or {"type": "string"}
        if depth >= _MAX_SCHEMA_DEPTH:
            low = high = max(0, int(schema.get("minItems", 0)))
        return [_instance(items, rng, root=root, depth=depth + 1, name=name) for _ in range(rng.randint(low, high))]
    if kind == "integer":
        low, high = _bounds(schema, integer=True)
        return rng.randint(int(low), int(high))
    if kind == "number":
        low, high = _bounds(schema, integer=False)
        return round(rng.uniform(low, high), 2) if high - low >= 0.01 else low
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, rng, name)


def _bounds(schema: Mapping[str, Any], *, integer: bool) -> tuple[float, float]:
    step = 1 if integer else 0.01
    low = float(schema.get("minimum", 0))
    high = float(schema.get("maximum", max(low, 100)))
    if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
        low = max(low, float(schema["exclusiveMinimum"]) + step)
    if "exclusiveMaximum" in schema and not isinstance(schema["exclusiveMaximum"], bool):
        high = min(high, float(schema["exclusiveMaximum"]) - step)
    if integer:
        low, high = float(int(-(-low // 1))), float(int(high // 1))
    return low, max(low, high)


def _string(schema: Mapping[str, Any], rng: random.Random, name: str) -> str:
    fmt = str(schema.get("format", "")).lower()
    if fmt == "date":
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if fmt == "date-time":
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
    if fmt == "email":
        return f"{rng.choice(_VOCABULARY)}@example.com"
    if fmt in ("uri", "url"):
        return f"https://example.com/{rng.choice(_VOCABULARY)}"
    long_field = any(word in name.lower() for word in ("description", "summary", "reason", "explanation"))
    words = [rng.choice(_VOCABULARY) for _ in range(rng.randint(10, 18) if long_field else rng.randint(1, 3))]
    text = " ".join(words)
    if long_field:
        text = text.capitalize() + "."
    min_length = int(schema.get("minLength", 0))
    max_length = schema.get("maxLength")
    while len(text) < min_length:
        text += " " + rng.choice(_VOCABULARY)
    if max_length is not None:
        text = text[: int(max_length)]
    return text


def openapi_to_json_schema(schema: Any) -> Any:
    """Convert the API's OpenAPI schema form (``responseSchema``) into JSON Schema."""
    if isinstance(schema, list):
        return [openapi_to_json_schema(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    converted: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            converted["type"] = value.lower()
        elif key in ("nullable", "propertyOrdering", "property_ordering"):
            continue
        elif key == "properties" and isinstance(value, Mapping):
            converted[key] = {name: openapi_to_json_schema(sub) for name, sub in value.items()}
        else:
            converted[key] = openapi_to_json_schema(value)
    if schema.get("nullable") and isinstance(converted.get("type"), str):
        converted["type"] = [converted["type"], "null"]
    return converted
