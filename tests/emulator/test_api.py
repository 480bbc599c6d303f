"""The API surface through the real google-genai SDK over real HTTP."""

from __future__ import annotations

import asyncio
import enum
import json

import httpx
import jsonschema
import pydantic
import pytest
from google.genai import errors, types

from airflow_provider_flex.emulator.model import count_tokens, openapi_to_json_schema
from airflow_provider_flex.pricing import FLEX_MODELS

FLEX = types.GenerateContentConfig(service_tier="flex")


@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
def test_generate_reports_text_usage_and_served_tier(emulator, make_client, api_version):
    client = make_client(emulator, api_version=api_version)
    response = client.models.generate_content(model="gemini-2.5-flash", contents="Tag this row: red shoes", config=FLEX)

    assert response.text.startswith("Flex emulator answer to: Tag this row")
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.sdk_http_response.headers["x-gemini-service-tier"] == "flex"
    usage = response.usage_metadata
    assert usage.prompt_token_count == count_tokens("Tag this row: red shoes") == 6
    assert usage.candidates_token_count == count_tokens(response.text)
    assert (
        usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count + usage.thoughts_token_count
    )
    counted = client.models.count_tokens(model="gemini-2.5-flash", contents="Tag this row: red shoes")
    assert counted.total_tokens == usage.prompt_token_count


def test_answer_is_a_function_of_the_prompt(client):
    first = client.models.generate_content(model="gemini-2.5-flash", contents="same prompt", config=FLEX).text
    again = client.models.generate_content(model="gemini-2.5-flash", contents="same prompt", config=FLEX).text
    other = client.models.generate_content(model="gemini-2.5-flash", contents="other prompt", config=FLEX).text
    assert first == again != other


def test_system_instruction_counts_as_prompt(client):
    config = types.GenerateContentConfig(service_tier="flex", system_instruction="Answer in French.")
    response = client.models.generate_content(model="gemini-2.5-flash", contents="hello", config=config)
    assert response.usage_metadata.prompt_token_count == count_tokens("Answer in French.") + count_tokens("hello")


@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
def test_stream_chunks_join_to_the_whole_answer(emulator, make_client, api_version):
    client = make_client(emulator, api_version=api_version)
    whole = client.models.generate_content(model="gemini-2.5-flash", contents="stream me a story", config=FLEX)
    chunks = list(
        client.models.generate_content_stream(model="gemini-2.5-flash", contents="stream me a story", config=FLEX)
    )

    assert len(chunks) > 2
    assert "".join(chunk.text for chunk in chunks) == whole.text
    assert [chunk.candidates[0].finish_reason for chunk in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count == whole.usage_metadata.candidates_token_count
    assert chunks[0].sdk_http_response.headers["x-gemini-service-tier"] == "flex"


def test_max_output_tokens_truncates_with_max_tokens(client):
    config = types.GenerateContentConfig(service_tier="flex", max_output_tokens=5)
    response = client.models.generate_content(model="gemini-2.5-flash", contents="write a lot", config=config)
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.usage_metadata.candidates_token_count == 5 == count_tokens(response.text)


def test_thinking_budget_zero_means_no_thought_tokens(client):
    config = types.GenerateContentConfig(service_tier="flex", thinking_config=types.ThinkingConfig(thinking_budget=0))
    response = client.models.generate_content(model="gemini-2.5-flash", contents="quick", config=config)
    assert not response.usage_metadata.thoughts_token_count


@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
def test_list_and_get_models(emulator, make_client, api_version):
    client = make_client(emulator, api_version=api_version)
    assert [m.name for m in client.models.list()] == [f"models/{m}" for m in FLEX_MODELS]
    model = client.models.get(model="gemini-2.5-pro")
    assert model.name == "models/gemini-2.5-pro"
    assert model.input_token_limit == 1_048_576


def test_list_models_pages(emulator, make_client):
    client = make_client(emulator)
    pager = client.models.list(config={"page_size": 4})
    assert len(pager.page) == 4
    assert [m.name for m in pager] == [f"models/{m}" for m in FLEX_MODELS]


def test_extra_models_are_served(start_emulator, make_client):
    client = make_client(start_emulator(models=(*FLEX_MODELS, "gemini-9-test")))
    assert client.models.generate_content(model="gemini-9-test", contents="hi", config=FLEX).text


def test_unknown_model_is_not_found(client):
    with pytest.raises(errors.ClientError) as raised:
        client.models.generate_content(model="gemini-0-nope", contents="hi", config=FLEX)
    assert (raised.value.code, raised.value.status) == (404, "NOT_FOUND")
    with pytest.raises(errors.ClientError) as raised:
        client.models.get(model="gemini-0-nope")
    assert raised.value.code == 404


@pytest.mark.parametrize("field", ["serviceTier", "service_tier"])
@pytest.mark.parametrize(
    ("spelling", "tier"),
    [
        ("flex", "flex"),
        ("FLEX", "flex"),
        ("SERVICE_TIER_FLEX", "flex"),
        ("standard", "standard"),
        ("SERVICE_TIER_STANDARD", "standard"),
        ("priority", "priority"),
        ("PRIORITY", "priority"),
        ("unspecified", "standard"),
    ],
)
def test_every_tier_spelling_over_raw_http(emulator, field, spelling, tier):
    body = {"contents": [{"parts": [{"text": "hi"}]}], field: spelling}
    response = httpx.post(f"{emulator.base_url}/v1beta/models/gemini-2.5-flash:generateContent?key=k", json=body)
    assert response.status_code == 200
    assert response.headers["x-gemini-service-tier"] == tier
    assert response.json()["usageMetadata"]["serviceTier"] == tier


def test_no_tier_is_standard(client):
    response = client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert response.sdk_http_response.headers["x-gemini-service-tier"] == "standard"


@pytest.mark.parametrize("tier", [types.ServiceTier.FLEX, "FLEX", "flex", types.ServiceTier.PRIORITY])
def test_sdk_tier_values(client, tier):
    config = types.GenerateContentConfig(service_tier=tier)
    response = client.models.generate_content(model="gemini-2.5-flash", contents="hi", config=config)
    assert response.sdk_http_response.headers["x-gemini-service-tier"] == types.ServiceTier(tier).value


def test_unknown_tier_is_invalid(emulator):
    body = {"contents": [{"parts": [{"text": "hi"}]}], "serviceTier": "cheapest"}
    response = httpx.post(f"{emulator.base_url}/v1/models/gemini-2.5-flash:generateContent?key=k", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Dimensions(pydantic.BaseModel):
    width_cm: float
    height_cm: float


class Product(pydantic.BaseModel):
    category: Colour
    tags: list[str]
    in_stock: bool
    rating: int
    dimensions: Dimensions
    note: str | None = None


def test_structured_output_parses_into_pydantic(client):
    config = types.GenerateContentConfig(
        service_tier="flex", response_mime_type="application/json", response_schema=Product
    )
    response = client.models.generate_content(model="gemini-2.5-flash", contents="Describe a red chair", config=config)
    assert isinstance(response.parsed, Product)
    assert response.parsed.category in (Colour.RED, Colour.BLUE)


def test_json_schema_output_validates(client):
    schema = {
        "type": "object",
        "properties": {
            "category": {"type": "string", "enum": ["books", "garden", "toys"]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "attributes": {
                "type": "array",
                "minItems": 2,
                "maxItems": 4,
                "items": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
            },
            "count": {"type": "integer", "minimum": 10, "maximum": 12},
            "released": {"type": "string", "format": "date"},
            "flag": {"anyOf": [{"type": "boolean"}, {"type": "null"}]},
        },
        "required": ["category", "confidence", "attributes"],
    }
    config = types.GenerateContentConfig(
        service_tier="flex", response_mime_type="application/json", response_json_schema=schema
    )
    for prompt in ("one", "two", "three"):
        response = client.models.generate_content(model="gemini-2.5-flash", contents=prompt, config=config)
        jsonschema.validate(json.loads(response.text), schema)
        assert response.parsed == json.loads(response.text)


def test_openapi_schema_output_validates(emulator):
    schema = {
        "type": "OBJECT",
        "properties": {
            "label": {"type": "STRING", "enum": ["a", "b"]},
            "items": {"type": "ARRAY", "items": {"type": "INTEGER", "minimum": 1, "maximum": 3}},
            "maybe": {"type": "STRING", "nullable": True},
        },
        "required": ["label", "items"],
    }
    body = {
        "contents": [{"parts": [{"text": "go"}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema},
    }
    response = httpx.post(f"{emulator.base_url}/v1/models/gemini-2.5-flash:generateContent?key=k", json=body)
    text = response.json()["candidates"][0]["content"]["parts"][0]["text"]
    jsonschema.validate(json.loads(text), openapi_to_json_schema(schema))


def test_async_client_generate_and_stream(client):
    async def generate_and_stream() -> tuple[str, list[str]]:
        async with client.aio as aio:
            whole = await aio.models.generate_content(model="gemini-2.5-flash", contents="async", config=FLEX)
            stream = await aio.models.generate_content_stream(model="gemini-2.5-flash", contents="async", config=FLEX)
            return whole.text, [chunk.text async for chunk in stream]

    whole, chunks = asyncio.run(generate_and_stream())
    assert "".join(chunks) == whole
