"""What a JSON answer must satisfy, checked here whatever the API enforced.

The API may or may not enforce a response schema (and the emulator, a proxy or a model may not), and
google-genai fills ``parsed`` without validating a ``response_json_schema``. So every JSON answer is
checked on the client: a JSON Schema dict with ``jsonschema`` (installed with Airflow), a pydantic model
class or ``TypeAdapter`` with pydantic. An unusable answer raises :class:`FlexResponseError` whose reason
says what went wrong: ``invalid_json``, ``max_tokens`` (cut at ``max_output_tokens`` before the JSON was
complete) or ``off_schema`` (valid JSON that breaks the schema; the message names the path and the rule).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_flex.exceptions import FlexResponseError
from airflow_provider_flex.hooks.request import is_pydantic_type

#: The longest message an off-schema answer's error carries (a dead letter's reason, an XCom).
MAX_PROBLEM_CHARS = 300


def json_path(parts: Any) -> str:
    """Return a JSONPath for an error location: ``("items", 0, "name")`` -> ``$.items[0].name``."""
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


@functools.lru_cache(maxsize=64)
def _json_schema_validator(text: str) -> Any:
    """Return one validator per distinct JSON Schema in the process (a thousand rows share one)."""
    import jsonschema

    schema = json.loads(text)
    return jsonschema.validators.validator_for(schema)(schema)


@dataclass(frozen=True)
class AnswerSchema:
    """The schema a JSON answer is checked against: a JSON Schema dict, or a pydantic type."""

    json_schema: Mapping[str, Any] | None = None
    pydantic_type: Any = None

    @classmethod
    def of_config(cls, config: Any) -> AnswerSchema | None:
        """Return the schema a ``GenerateContentConfig`` asks for, or None when it asks for no JSON schema.

        ``response_schema`` as a pydantic type is validated by pydantic; ``response_json_schema`` with
        ``jsonschema``. A ``response_schema`` given as an OpenAPI dict is parsed as JSON but not validated.
        """
        schema = getattr(config, "response_schema", None)
        if schema is not None and is_pydantic_type(schema):
            return cls(pydantic_type=schema)
        json_schema = getattr(config, "response_json_schema", None)
        if isinstance(json_schema, Mapping):
            return cls(json_schema=json_schema)
        if schema is not None:
            return cls()
        return None

    def parse(self, text: str | None, finish_reason: str | None) -> Any:
        """Return the answer's JSON, validated; raise FlexResponseError saying why it is unusable."""
        try:
            data = json.loads(text or "")
        except ValueError as exc:
            if finish_reason == "MAX_TOKENS":
                raise FlexResponseError(
                    "max_tokens", "the answer was cut at maxOutputTokens before its JSON was complete"
                ) from None
            raise FlexResponseError("invalid_json", f"the answer is not valid JSON ({exc})") from None
        if self.pydantic_type is not None:
            return self._pydantic(data)
        if self.json_schema is not None:
            self._check_json_schema(data)
        return data

    def _pydantic(self, data: Any) -> Any:
        from pydantic import TypeAdapter, ValidationError

        adapter = self.pydantic_type if not isinstance(self.pydantic_type, type) else TypeAdapter(self.pydantic_type)
        try:
            return adapter.validate_python(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise off_schema(f"{json_path(first.get('loc', ()))}: {first.get('msg', 'invalid')}") from None

    def _check_json_schema(self, data: Any) -> None:
        import jsonschema

        validator = _json_schema_validator(json.dumps(self.json_schema, sort_keys=True))
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        if error is not None:
            raise off_schema(f"{json_path(error.absolute_path)}: {rule_broken(error)}")


def rule_broken(error: Any) -> str:
    """Return a jsonschema error's message without the offending value (an answer can be long)."""
    message = str(error.message)
    value = repr(error.instance)
    if message.startswith(value) and error.validator not in ("required", "additionalProperties"):
        message = message[len(value) :].strip()
    return message


def off_schema(problem: str) -> FlexResponseError:
    """Return the error for valid JSON that breaks the schema; ``problem`` names the path and the rule."""
    return FlexResponseError("off_schema", problem[:MAX_PROBLEM_CHARS])
