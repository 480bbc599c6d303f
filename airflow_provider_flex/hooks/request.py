"""Request building, in one place: :class:`FlexRequest` (one call as a task describes it), its generate
config, and each attempt's request config (tier, timeout, no SDK retries).

Shared by the operators (on a worker) and the trigger (which, for a task that starts in the triggerer,
renders the task's templated arguments itself), so both send exactly the same request; the hook turns
a FlexRequest into the SDK's config here and nowhere else.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.genai import types


def estimate_prompt_chars(contents: Any) -> tuple[int, int]:
    """Return (characters of text, non-text parts) in a prompt, whatever shape the SDK accepts."""
    if contents is None:
        return 0, 0
    if isinstance(contents, str):
        return len(contents), 0
    if isinstance(contents, Mapping):
        if "text" in contents:
            return len(str(contents.get("text") or "")), 0
        if "parts" in contents:
            return estimate_prompt_chars(contents["parts"])
        return 0, 1
    if isinstance(contents, list | tuple):
        chars = parts = 0
        for item in contents:
            more_chars, more_parts = estimate_prompt_chars(item)
            chars, parts = chars + more_chars, parts + more_parts
        return chars, parts
    text = getattr(contents, "text", None)
    if isinstance(text, str):
        return len(text), 0
    inner = getattr(contents, "parts", None)
    if inner is not None:
        return estimate_prompt_chars(list(inner))
    return 0, 1


def is_pydantic_type(schema: Any) -> bool:
    """Return whether ``schema`` is a pydantic model class or a ``TypeAdapter``."""
    return (isinstance(schema, type) and hasattr(schema, "model_json_schema")) or (
        hasattr(schema, "validate_python") and hasattr(schema, "json_schema")
    )


def response_json_schema(schema: Any) -> dict[str, Any] | None:
    """Return the JSON Schema for ``schema`` (a dict, a pydantic model class or a ``TypeAdapter``), or None."""
    if schema is None:
        return None
    if is_pydantic_type(schema):
        return schema.model_json_schema() if isinstance(schema, type) else schema.json_schema()
    if isinstance(schema, Mapping):
        _check_json_schema(schema)
        return dict(schema)
    raise TypeError(
        f"response_schema must be a JSON Schema dict or a pydantic model class (or a TypeAdapter), "
        f"got {type(schema).__name__}"
    )


def _check_json_schema(schema: Mapping[str, Any]) -> None:
    import jsonschema  # already loaded by Airflow

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "the top level"
        raise ValueError(f"response_schema is not a valid JSON Schema at {where}: {exc.message}") from None


def check_schema_at_parse_time(task_id: str, schema: Any) -> None:
    """Fail when the DAG is parsed, naming the task, rather than at run time (a str is a template)."""
    if isinstance(schema, str):
        return
    try:
        response_json_schema(schema)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"Task {task_id!r}: {exc}") from None


@dataclass(frozen=True)
class FlexRequest:
    """One flex call as a task describes it: the value a worker sends and the triggerer receives.

    ``generation_config`` is a dict (JSON-safe, as a task gives it) or a ``GenerateContentConfig``
    (a hook caller's); ``system_instruction`` and ``response_schema`` (a JSON Schema dict, a pydantic
    model class or a ``TypeAdapter``) are merged into it by :meth:`config`. ``media`` names files for
    the prompt (locations or :class:`~airflow_provider_flex.media.MediaFile`).
    """

    contents: Any = None
    model: str | None = None
    system_instruction: str | None = None
    generation_config: Any = None
    response_schema: Any = None
    service_tier: str = "flex"
    media: Sequence[Any] | None = None
    #: An explicit cache's name (``cachedContents/...``): its instruction and contents come before ``contents``.
    cached_content: str | None = None

    @classmethod
    def of_call(cls, request: FlexRequest | None, arguments: Mapping[str, Any]) -> FlexRequest:
        """Return ``request``, or one from a hook method's keywords (``contents``, ``model``, ``config``,
        ``service_tier``, ``media``); a keyword it does not know is a TypeError naming it."""
        if request is not None and not arguments:
            return request
        fields = dict(arguments)
        if "config" in fields:
            fields["generation_config"] = fields.pop("config")
        unknown = set(fields) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise TypeError(f"unknown call argument(s) {sorted(unknown)}")
        return replace(request, **fields) if request is not None else cls(**fields)

    def check(self, task: str) -> None:
        """Fail with a clear error, naming ``task``, when the contents are empty or clash with the cache named."""
        contents = self.contents
        empty = contents is None or (isinstance(contents, str) and not contents.strip())
        if empty or (isinstance(contents, Sequence | Mapping) and not isinstance(contents, str) and not contents):
            raise ValueError(f"{task}: contents is empty; give the prompt text or a list of contents")
        check_cached_content(task, self.cached_content, self.system_instruction, self.generation_config)

    def config(self) -> types.GenerateContentConfig:
        """Return the validated generate config: ``generation_config`` with the instruction and the schema."""
        base = self.generation_config
        fields = _instruction_and_schema(self.system_instruction, self.response_schema)
        if self.cached_content:
            fields["cached_content"] = self.cached_content
        if not fields:
            return as_generate_config(base)
        if base is not None and not isinstance(base, Mapping):  # a GenerateContentConfig: copy with the fields
            return base.model_copy(update=fields)
        return as_generate_config({**(base or {}), **fields})

    def to_trigger_kwargs(self) -> dict[str, Any]:
        """Return the request as the trigger's JSON-safe arguments (a template string is left to render)."""
        from airflow_provider_flex.media import media_locations

        schema = self.response_schema
        return {
            "contents": self.contents,
            "model": self.model,
            "system_instruction": self.system_instruction,
            "generation_config": self.generation_config,
            "response_schema": schema if isinstance(schema, str) else response_json_schema(schema),
            "service_tier": self.service_tier,
            "media": self.media if isinstance(self.media, str) else media_locations(self.media),
            "cached_content": self.cached_content,
        }


def check_cached_content(task: str, cached_content: Any, system_instruction: Any, generation_config: Any) -> None:
    """Fail, naming ``task``, when a request names a cache and also sets what belongs to it (the API's 400)."""
    if not cached_content:
        return
    if not isinstance(cached_content, str):
        raise TypeError(f"{task}: cached_content must be a cache name ('cachedContents/...'), "
                        f"got {type(cached_content).__name__}")  # fmt: skip
    config = generation_config if isinstance(generation_config, Mapping) else {}
    clashing = [name for name in ("system_instruction", "tools", "tool_config") if config.get(name)]
    if system_instruction:
        clashing.insert(0, "system_instruction")
    if clashing:
        raise ValueError(
            f"{task}: cached_content {cached_content!r} cannot be combined with {', '.join(sorted(set(clashing)))}: "
            "those belong to the cache (make the cache with them instead)"
        )


def _instruction_and_schema(system_instruction: str | None, response_schema: Any) -> dict[str, Any]:
    """Return the config fields a task's system instruction and response schema set."""
    fields: dict[str, Any] = {}
    if system_instruction:
        fields["system_instruction"] = system_instruction
    schema = response_json_schema(response_schema)
    if schema is not None:
        fields["response_mime_type"] = "application/json"
        fields["response_json_schema"] = schema
    return fields


@functools.lru_cache(maxsize=128)
def validated_configs(text: str) -> types.GenerateContentConfig:
    """Return one validated config per distinct JSON config in the process: a thousand triggers judging with the
    same config share it (and its request configs), instead of each holding its own pydantic copy."""
    return _validated_config(json.loads(text))


def _validated_config(config: Mapping[str, Any]) -> types.GenerateContentConfig:
    from google.genai import types

    try:
        return types.GenerateContentConfig.model_validate(dict(config))
    except Exception as exc:
        raise ValueError(f"Invalid generate config: {exc}") from None


def as_generate_config(config: Any) -> types.GenerateContentConfig:
    """Return a GenerateContentConfig from a dict (validated once; a bulk caller reuses it for every call)."""
    from google.genai import types

    if config is None:
        return types.GenerateContentConfig()
    if isinstance(config, types.GenerateContentConfig):
        return config
    if isinstance(config, Mapping):
        try:
            text = json.dumps(config, sort_keys=True)
        except (TypeError, ValueError):  # not JSON data (a pydantic schema class, say): validate it afresh
            return _validated_config(config)
        return validated_configs(text)
    raise TypeError(f"config must be a GenerateContentConfig or a dict, got {type(config).__name__}")


class RequestConfigs:
    """Request configs already built per (caller's config, tier, timeout), for the whole process.

    A bulk caller sends one config for every row, a triggerer's judges share one: building
    the request config (three pydantic copies) once instead of per call is a measurable
    share of the CPU, and of the objects a thousand waiting calls hold.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size

    @property
    def _built(self) -> dict[tuple[int, str, int, str | None], tuple[Any, Any]]:
        from airflow_provider_flex.process_state import PROCESS  # at call time: a DAG file parses without it

        return PROCESS.request_configs

    def get(
        self, base: types.GenerateContentConfig, tier: str, timeout_ms: int, vertex_flex_mode: str | None = None
    ) -> types.GenerateContentConfig:
        key = (id(base), tier, timeout_ms, vertex_flex_mode)
        cached = self._built.get(key)
        if cached is not None and cached[0] is base:  # the same object, not a new one at a reused id
            return cached[1]
        config = request_config(base, tier, timeout_ms, vertex_flex_mode)
        if len(self._built) >= self.size:
            self._built.clear()
        self._built[key] = (base, config)
        return config


#: The process's request configs (see :class:`RequestConfigs`).
REQUEST_CONFIGS = RequestConfigs()


def request_config(
    base: types.GenerateContentConfig, tier: str, timeout_ms: int, vertex_flex_mode: str | None = None
) -> types.GenerateContentConfig:
    """Return ``base`` with the tier, the attempt's timeout, the SDK's own retries off and one API call per SDK call.

    On Vertex AI (``vertex_flex_mode`` given) the tier goes in the headers, never the body.
    """
    from google.genai import types

    from airflow_provider_flex.hooks.vertex import tier_headers

    base_http = base.http_options
    http_update: dict[str, Any] = {"timeout": timeout_ms, "retry_options": None}
    if vertex_flex_mode is not None:
        http_update["headers"] = {
            **((base_http.headers or {}) if base_http else {}),
            **tier_headers(tier, vertex_flex_mode),
        }
    http_options = (base_http.model_copy() if base_http else types.HttpOptions()).model_copy(update=http_update)
    update: dict[str, Any] = {"http_options": http_options}
    if vertex_flex_mode is None:
        update["service_tier"] = tier
    if base.automatic_function_calling is None:
        # One SDK call must stay one API call, so retries, usage and cost stay exact.
        update["automatic_function_calling"] = types.AutomaticFunctionCallingConfig(disable=True)
    return base.model_copy(update=update)
