"""The shipped price data and the pure pricing functions: long prompts, audio, tool use, aliases, a team's file."""

from __future__ import annotations

import json

import pytest

from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.hooks.call import answering_model
from airflow_provider_flex.price_file import price_table
from airflow_provider_flex.pricing import (
    DEFAULT_PRICES,
    SHIPPED,
    learn_cache_minimum,
    min_cache_tokens,
    parse_price_data,
    price_of,
    token_cost,
    unpriced_reason,
)
from airflow_provider_flex.process_state import PROCESS


def test_every_entry_names_its_source_date_and_what_was_verified():
    for model, entry in SHIPPED.raw["models"].items():
        assert entry["source"] and entry["as_of"], model
        assert isinstance(entry["verified"], list) and isinstance(entry["derived"], list), model
        assert model in DEFAULT_PRICES or entry.get("unpriced"), model


def test_todays_flash_models_are_priced_and_the_alias_is_its_target():
    assert price_of("gemini-3.5-flash", "standard") == price_of("models/gemini-flash-latest", "standard")
    assert price_of("gemini-3.5-flash", "flex").input == 0.75 and price_of("gemini-3.5-flash", "flex").output == 4.50
    assert price_of("gemini-3.8-flash", "flex").cached_input == 0.0375  # its row halves cached tokens on flex


def test_a_long_pro_prompt_is_billed_at_the_long_rates():
    short = token_cost(200_000, 1_000, model="gemini-3.1-pro-preview", tier="standard")
    long = token_cost(250_000, 1_000, model="gemini-3.1-pro-preview", tier="standard")
    assert short == pytest.approx((200_000 * 2.00 + 1_000 * 12.00) / 1e6)
    assert long == pytest.approx((250_000 * 4.00 + 1_000 * 18.00) / 1e6)


def test_audio_and_tool_use_tokens_have_their_prices():
    cost = token_cost(
        1_000, 0, model="gemini-2.5-flash", tier="standard", audio_prompt_tokens=600, tool_use_prompt_tokens=256
    )
    assert cost == pytest.approx((400 * 0.30 + 600 * 1.00 + 256 * 0.30) / 1e6)
    cached = token_cost(
        1_000, 0, model="gemini-2.5-flash", tier="standard", cached_tokens=500, audio_prompt_tokens=600,
        audio_cached_tokens=300,
    )  # fmt: skip
    # uncached: 300 audio, 200 text; cached: 300 audio, 200 text
    assert cached == pytest.approx((300 * 1.00 + 200 * 0.30 + 300 * 0.10 + 200 * 0.03) / 1e6)


def test_batch_cached_tokens_are_halved_only_where_the_page_says():
    assert price_of("gemini-3.1-flash-lite-preview", "batch").cached_input == 0.0125
    assert price_of("gemini-2.5-flash", "batch").cached_input == price_of("gemini-2.5-flash", "standard").cached_input


def test_an_unpriced_model_says_why_and_where_to_price_it():
    assert price_of("gemini-3.7-flash", "flex") is None
    assert "prices_file" in unpriced_reason("gemini-3.7-flash", "flex")
    assert "prices_file" in unpriced_reason("gemini-9-made-up", "flex")
    assert unpriced_reason("gemini-3.5-flash", "flex") is None


def test_the_answering_model_names_the_price():
    assert answering_model("gemini-flash-latest", "gemini-3.5-flash", DEFAULT_PRICES) == "gemini-3.5-flash"
    assert answering_model("gemini-flash-latest", None, DEFAULT_PRICES) == "gemini-3.5-flash"
    assert answering_model("gemini-3-flash-preview", "gemini-3-flash-preview-0917", DEFAULT_PRICES) == (
        "gemini-3-flash-preview"
    )  # a dated version the table does not know is priced as what was asked for


def test_a_bad_entry_names_the_model_and_field():
    with pytest.raises(ValueError, match=r"models.m.standard.input"):
        parse_price_data({"models": {"m": {"standard": {"input": "cheap", "output": 1}}}})
    with pytest.raises(ValueError, match=r"unknown price field.*inptu"):
        parse_price_data({"models": {"m": {"standard": {"inptu": 1, "input": 1, "output": 1}}}})


def test_a_refusal_teaches_the_cache_minimum():
    try:
        assert min_cache_tokens("gemini-2.5-flash") == 1024
        assert learn_cache_minimum("gemini-2.5-flash", 2048) and not learn_cache_minimum("gemini-2.5-flash", 2048)
        assert min_cache_tokens("models/gemini-2.5-flash") == 2048
    finally:
        PROCESS.reset()


def test_a_team_file_is_merged_field_by_field(tmp_path, monkeypatch):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {"gemini-3.7-flash": {"standard": {"input": 1.0, "output": 5.0}},
                                           "gemini-2.5-flash": {"standard": {"output": 3.0}}}}))  # fmt: skip
    monkeypatch.setenv("AIRFLOW__GEMINI_FLEX__PRICES_FILE", str(path))
    try:
        table = price_table()
        assert table["gemini-3.7-flash"]["flex"].input == 0.5
        assert (
            table["gemini-2.5-flash"]["standard"].output == 3.0 and table["gemini-2.5-flash"]["standard"].input == 0.30
        )
    finally:
        PROCESS.reset()


def test_a_bad_team_file_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__GEMINI_FLEX__PRICES_FILE", str(tmp_path / "missing.json"))
    try:
        with pytest.raises(FlexError, match=r"\[gemini_flex\] prices_file"):
            price_table()
    finally:
        PROCESS.reset()
