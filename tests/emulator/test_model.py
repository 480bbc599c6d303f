"""The deterministic model as pure functions."""

from __future__ import annotations

import json

import jsonschema
import pytest

from airflow_provider_flex.emulator import model as lm


def test_count_and_truncate_agree():
    text = "Hello, world! It's 2026; flex-tier calls are cheap."
    assert lm.count_tokens(text) == 16
    for limit in range(0, 18):
        assert lm.count_tokens(lm.truncate_to_tokens(text, limit)) == min(limit, 16)
    assert lm.truncate_to_tokens(text, 100) == text


def test_chunks_cover_the_text_exactly():
    text = lm.text_answer("anything at all", min_tokens=50, max_tokens=50)
    chunks = lm.split_into_chunks(text, 8)
    assert "".join(chunks) == text
    assert len(chunks) == 7
    assert lm.split_into_chunks("", 8) == [""]


def test_text_answer_length_and_determinism():
    answer = lm.text_answer("prompt", min_tokens=30, max_tokens=30)
    assert lm.count_tokens(answer) == 30
    assert answer == lm.text_answer("prompt", min_tokens=30, max_tokens=30)


def test_prompt_tokens_count_non_text_parts():
    contents = [{"parts": [{"text": "two words"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}]
    assert lm.prompt_tokens(contents) == 2 + lm.NON_TEXT_PART_TOKENS
    assert lm.prompt_tokens(contents, {"parts": [{"text": "sys"}]}) == 3 + lm.NON_TEXT_PART_TOKENS


@pytest.mark.parametrize("budget", [None, -1, 0, 10])
def test_thoughts_tokens_respect_budget(budget):
    tokens = lm.thoughts_tokens("p", budget)
    if budget == 0:
        assert tokens == 0
    elif budget == 10:
        assert tokens == 10
    else:
        assert 16 <= tokens <= 64


SCHEMAS = [
    {"type": "string"},
    {"type": "integer", "minimum": 5, "maximum": 5},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    {"type": "boolean"},
    {"type": ["string", "null"], "minLength": 30, "maxLength": 40},
    {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3},
    {"enum": ["a", "b", 3]},
    {"const": "fixed"},
    {
        "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
        "$ref": "#/$defs/Node",
    },
    {
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "when": {"type": "string", "format": "date-time"},
            "contact": {"type": "string", "format": "email"},
            "nested": {"type": "object", "properties": {"deep": {"type": "array", "items": {"type": "boolean"}}}},
        },
        "required": ["summary", "nested"],
        "additionalProperties": False,
    },
    {"oneOf": [{"type": "null"}, {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}]},
]


@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize("prompt", ["first", "second", "third"])
def test_json_answer_validates(schema, prompt):
    jsonschema.validate(json.loads(lm.json_answer(prompt, schema)), schema)


def test_openapi_schema_conversion():
    converted = lm.openapi_to_json_schema(
        {
            "type": "OBJECT",
            "properties": {
                "a": {"type": "STRING", "nullable": True},
                "b": {"type": "ARRAY", "items": {"type": "NUMBER"}},
            },
            "propertyOrdering": ["b", "a"],
        }
    )
    assert converted == {
        "type": "object",
        "properties": {"a": {"type": ["string", "null"]}, "b": {"type": "array", "items": {"type": "number"}}},
    }


def test_property_ordering_is_honoured():
    schema = {
        "type": "OBJECT",
        "properties": {"a": {"type": "STRING"}, "b": {"type": "STRING"}},
        "propertyOrdering": ["b", "a"],
    }
    assert list(json.loads(lm.json_answer("p", schema))) == ["b", "a"]
