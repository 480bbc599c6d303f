"""The request a task describes, as JSON-safe data: its contents checked, its generate config built.

Shared by the operators (on a worker) and the trigger (which, for a task that
starts in the triggerer, renders the task's templated arguments itself), so both
send exactly the same request.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.genai import types


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


def generate_config(
    system_instruction: str | None, generation_config: Mapping[str, Any] | None, response_schema: Any
) -> dict[str, Any]:
    """The generate config as JSON-safe data, so a triggerer gets exactly what a worker would send."""
    config = dict(generation_config or {})
    if system_instruction:
        config["system_instruction"] = system_instruction
    schema = response_json_schema(response_schema)
    if schema is not None:
        config["response_mime_type"] = "application/json"
        config["response_json_schema"] = schema
    return config


def check_contents(contents: Any, task_id: str) -> None:
    empty = contents is None or (isinstance(contents, str) and not contents.strip())
    if empty or (isinstance(contents, Sequence | Mapping) and not isinstance(contents, str) and not contents):
        raise ValueError(f"Task {task_id!r}: contents is empty; give the prompt text or a list of contents")


def task_request_config(
    task_id: str,
    contents: Any,
    system_instruction: str | None,
    generation_config: Mapping[str, Any] | None,
    response_schema: Any,
) -> dict[str, Any]:
    """A task's contents checked and its generate config built: the same on a worker and in the triggerer."""
    check_contents(contents, task_id)
    return generate_config(system_instruction, generation_config, response_schema)


@functools.lru_cache(maxsize=128)
def validated_configs(text: str) -> types.GenerateContentConfig:
    """One validated config per distinct JSON config in the process: a thousand triggers judging with the
    same config share it (and its request configs), instead of each holding its own pydantic copy."""
    return _validated_config(json.loads(text))


def _validated_config(config: Mapping[str, Any]) -> types.GenerateContentConfig:
    from google.genai import types

    try:
        return types.GenerateContentConfig.model_validate(dict(config))
    except Exception as exc:
        raise ValueError(f"Invalid generate config: {exc}") from None


def as_generate_config(config: Any) -> types.GenerateContentConfig:
    """A GenerateContentConfig from a dict (validated once; a bulk caller reuses it for every call)."""
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
