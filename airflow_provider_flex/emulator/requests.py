"""What a Gemini request says, as the emulator reads it: the tier, the contents, the generation config."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from airflow_provider_flex.emulator import model as lm
from airflow_provider_flex.emulator.errors import ApiError

SERVICE_TIER_HEADER = "x-gemini-service-tier"
#: The tools the model runs itself (their results are fed back as ``toolUsePromptTokenCount``), in both spellings.
BUILT_IN_TOOLS = frozenset(
    {"googleSearch", "google_search", "codeExecution", "code_execution", "urlContext", "url_context"}
)
#: Prompt tokens one built-in tool's result adds (the emulator runs no tool: a fixed, documented figure).
TOOL_RESULT_TOKENS = 256
_TIER_ALIASES = {"flex": "flex", "standard": "standard", "priority": "priority", "unspecified": "standard"}


def normalize_tier(value: Any) -> str:
    """Return the tier named by any spelling the API accepts (``flex``, ``FLEX``, ``SERVICE_TIER_FLEX``)."""
    if value is None:
        return "standard"
    if not isinstance(value, str):
        raise ApiError(400, "INVALID_ARGUMENT", f"Invalid value for service_tier: {value!r}")
    tier = _TIER_ALIASES.get(value.strip().lower().removeprefix("service_tier_"))
    if tier is None:
        raise ApiError(400, "INVALID_ARGUMENT", f"Invalid value at 'service_tier': \"{value}\"")
    return tier


def pick(mapping: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in mapping:
            return mapping[name]
    return None


@dataclass
class GenerateRequest:
    """The parts of a generateContent body the emulator acts on."""

    contents: list[Any]
    system_instruction: Any
    tier: str
    max_output_tokens: int | None
    schema: Mapping[str, Any] | None
    thinking_budget: int | None
    response_modalities: tuple[str, ...] = ("TEXT",)
    part_tokens: Callable[[Mapping[str, Any]], int] | None = None
    tools: tuple[Mapping[str, Any], ...] = ()

    @cached_property
    def prompt(self) -> str:
        """Return the prompt's text, with a short digest standing for each media part (so answers differ by image)."""
        system_text = lm.content_text(self.system_instruction)[0] if self.system_instruction else ""
        text = (
            f"{system_text}\n{lm.content_text(self.contents)[0]}" if system_text else lm.content_text(self.contents)[0]
        )
        media = [
            f"[{p['type']}:{hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()[:8]}]"
            for p in self.parts
            if p["type"] != "text"
        ]
        return " ".join([text, *media]) if media else text

    @cached_property
    def parts(self) -> list[dict[str, Any]]:
        return lm.parts_summary(self.contents)

    @cached_property
    def counted_parts(self) -> list[tuple[str, int]]:
        """Return each prompt part's modality and tokens, in prompt order."""
        return lm.prompt_part_tokens(self.contents, self.system_instruction, self.part_tokens)

    @cached_property
    def prompt_tokens(self) -> int:
        return sum(tokens for _, tokens in self.counted_parts)

    @cached_property
    def tool_use_prompt_tokens(self) -> int:
        """Return the tokens the built-in tools' results add to the prompt (``toolUsePromptTokenCount``)."""
        return TOOL_RESULT_TOKENS * len([tool for tool in self.tools if BUILT_IN_TOOLS & set(tool)])


def validate_contents(contents: Any) -> list[Any]:
    if contents is None:
        raise ApiError(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified")
    if isinstance(contents, dict):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        raise ApiError(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified")
    for index, content in enumerate(contents):
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not parts:
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"* GenerateContentRequest.contents[{index}].parts: contents.parts must not be empty.",
            )
    text, other_parts = lm.content_text(contents)
    if not text.strip() and not other_parts:
        raise ApiError(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: the prompt is empty.")
    return contents


def parse_generate_request(body: Any, part_tokens: Callable[[Mapping[str, Any]], int] | None = None) -> GenerateRequest:
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object.")
    config = pick(body, "generationConfig", "generation_config") or {}
    if not isinstance(config, dict):
        raise ApiError(400, "INVALID_ARGUMENT", "Invalid JSON payload received. generationConfig must be an object.")
    mime = pick(config, "responseMimeType", "response_mime_type")
    schema = pick(config, "responseJsonSchema", "response_json_schema", "_responseJsonSchema")
    if schema is None:
        schema = pick(config, "responseSchema", "response_schema")
    if schema is not None and mime != "application/json":
        raise ApiError(400, "INVALID_ARGUMENT", "responseSchema requires responseMimeType 'application/json'.")
    if schema is not None and not isinstance(schema, dict):
        raise ApiError(400, "INVALID_ARGUMENT", "responseSchema must be an object.")
    max_tokens = pick(config, "maxOutputTokens", "max_output_tokens")
    thinking = pick(config, "thinkingConfig", "thinking_config") or {}
    budget = pick(thinking, "thinkingBudget", "thinking_budget") if isinstance(thinking, dict) else None
    try:
        max_tokens = None if max_tokens is None else int(max_tokens)
        budget = None if budget is None else int(budget)
    except (TypeError, ValueError):
        raise ApiError(400, "INVALID_ARGUMENT", "maxOutputTokens and thinkingBudget must be integers.") from None
    if max_tokens is not None and max_tokens < 1:
        raise ApiError(400, "INVALID_ARGUMENT", "maxOutputTokens must be positive.")
    if schema is None and mime == "application/json":
        schema = {}
    modalities = pick(config, "responseModalities", "response_modalities") or ["TEXT"]
    if not isinstance(modalities, list) or not all(str(m).upper() in ("TEXT", "IMAGE", "AUDIO") for m in modalities):
        raise ApiError(400, "INVALID_ARGUMENT", f"Invalid responseModalities: {modalities!r}")
    return GenerateRequest(
        contents=validate_contents(body.get("contents")),
        system_instruction=pick(body, "systemInstruction", "system_instruction"),
        tier=normalize_tier(pick(body, "serviceTier", "service_tier")),
        max_output_tokens=max_tokens,
        schema=schema,
        thinking_budget=budget,
        response_modalities=tuple(str(m).upper() for m in modalities),
        part_tokens=part_tokens,
        tools=tuple(tool for tool in body.get("tools") or [] if isinstance(tool, Mapping)),
    )
