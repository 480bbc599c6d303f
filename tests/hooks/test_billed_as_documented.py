"""Calls through the real SDK to the emulator, billed as the pricing page documents: audio, tool use, aliases."""

from __future__ import annotations

import io
import wave

import pytest

from airflow_provider_flex.pricing import token_cost


def _wav(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(1)
        sound.setframerate(rate)
        sound.writeframes(b"\x80" * int(seconds * rate))
    return buffer.getvalue()


def test_an_audio_prompt_is_counted_by_modality_and_billed_at_the_audio_price(hook):
    from google.genai import types

    audio = types.Part.from_bytes(data=_wav(10.0), mime_type="audio/wav")
    response = hook.generate_content(contents=["Transcribe this call.", audio], model="gemini-2.5-flash")
    usage = response.usage
    assert usage.audio_prompt_tokens == 320  # 32 tokens a second (the audio page)
    assert usage.prompt_tokens == usage.audio_prompt_tokens + 4
    expected = token_cost(
        usage.prompt_tokens, usage.billed_output_tokens, model="gemini-2.5-flash", tier="flex", audio_prompt_tokens=320
    )
    assert response.cost_usd == pytest.approx(expected)
    text_only = token_cost(usage.prompt_tokens, usage.billed_output_tokens, model="gemini-2.5-flash", tier="flex")
    assert response.cost_usd > text_only  # audio input costs 3.3x text on 2.5 Flash


def test_a_tool_using_call_bills_the_tool_results_as_input(hook):
    response = hook.generate_content(
        contents="What changed in the flex tier this week?",
        model="gemini-3-flash-preview",
        config={"tools": [{"google_search": {}}]},
    )
    usage = response.usage
    assert usage.tool_use_prompt_tokens == 256
    assert usage.total_tokens == usage.prompt_tokens + 256 + usage.output_tokens + usage.thoughts_tokens
    assert response.cost_usd == pytest.approx(
        token_cost(
            usage.prompt_tokens,
            usage.billed_output_tokens,
            model="gemini-3-flash-preview",
            tier="flex",
            tool_use_prompt_tokens=256,
        )
    )


def test_an_alias_is_named_and_priced_as_the_model_behind_it(hook):
    response = hook.generate_content(contents="Classify: great product", model="gemini-flash-latest")
    assert response.model == "gemini-3.5-flash"
    usage = response.usage
    assert response.cost_usd == pytest.approx((usage.prompt_tokens * 0.75 + usage.billed_output_tokens * 4.50) / 1e6)
    assert response.standard_cost_usd == pytest.approx(2 * response.cost_usd)
