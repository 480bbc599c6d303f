from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google import genai
from google.genai import types

from airflow_provider_flex.emulator import FlexEmulator

API_KEY = "test-key"


@pytest.fixture
def emulator() -> Iterator[FlexEmulator]:
    with FlexEmulator(seed=1) as running:
        yield running


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., FlexEmulator]]:
    """Start emulators with custom settings; all are stopped after the test."""
    started: list[FlexEmulator] = []

    def start(**settings: Any) -> FlexEmulator:
        started.append(FlexEmulator(**{"seed": 1, **settings}).start())
        return started[-1]

    yield start
    for running in started:
        running.stop()


def sdk_client(
    emulator: FlexEmulator,
    *,
    api_version: str | None = None,
    timeout_ms: int = 30_000,
    api_key: str = API_KEY,
    **options: Any,
) -> genai.Client:
    """A real google-genai client pointed at the emulator."""
    http_options = types.HttpOptions(base_url=emulator.base_url, timeout=timeout_ms, api_version=api_version, **options)
    return genai.Client(api_key=api_key, http_options=http_options)


@pytest.fixture
def client(emulator: FlexEmulator) -> genai.Client:
    return sdk_client(emulator)


@pytest.fixture
def make_client() -> Callable[..., genai.Client]:
    return sdk_client
