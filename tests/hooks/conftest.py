from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.hooks.retry import FlexRetryPolicy

API_KEY = "sk-test-0123456789-secret"
FAST = FlexRetryPolicy(max_attempts=5, initial_delay=0.05, max_delay=0.2, jitter=0.0, deadline=30)


@pytest.fixture
def emulator() -> Iterator[FlexEmulator]:
    with FlexEmulator(seed=1) as running:
        yield running


@pytest.fixture
def set_connection(monkeypatch) -> Callable[..., None]:
    """Define a gemini_flex connection through the environment, as a deployment would."""

    def define(conn_id: str = "gemini_flex_default", **fields: Any) -> None:
        extra = fields.pop("extra", None)
        conn = {"conn_type": "gemini_flex", **fields}
        if extra is not None:
            conn["extra"] = extra
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))

    return define


@pytest.fixture
def connection(emulator, set_connection) -> FlexEmulator:
    set_connection(host=emulator.base_url, password=API_KEY)
    return emulator


@pytest.fixture
def hook(connection) -> GeminiFlexHook:
    return GeminiFlexHook(retry_policy=FAST)


def run_generate(hook: GeminiFlexHook, mode: str, **kwargs: Any):
    """Call generate_content or its async twin, so each behaviour is tested on both paths."""
    if mode == "sync":
        return hook.generate_content(**kwargs)
    return asyncio.run(hook.agenerate_content(**kwargs))


def run_stream(hook: GeminiFlexHook, mode: str, **kwargs: Any) -> tuple[list[str], Any]:
    if mode == "sync":
        stream = hook.stream_content(**kwargs)
        return list(stream), stream.result

    async def collect():
        stream = hook.astream_content(**kwargs)
        return [piece async for piece in stream], stream.result

    return asyncio.run(collect())


@pytest.fixture
def captured_logs(caplog, capfd) -> Callable[[], str]:
    """Everything logged so far, whether through stdlib logging or Airflow's structlog console."""
    caplog.set_level(logging.DEBUG)

    def text() -> str:
        out, err = capfd.readouterr()
        return caplog.text + out + err

    return text


@pytest.fixture
def times_logged(caplog, capfd) -> Callable[[str], int]:
    """How many times a message was logged, through stdlib logging or Airflow's structlog console.

    The same record may reach both (whether it does depends on how earlier tests left logging), so the
    count is the larger of the two sinks, never their sum.
    """
    caplog.set_level(logging.DEBUG)
    console: list[str] = []

    def count(fragment: str) -> int:
        console.extend(capfd.readouterr())
        return max(caplog.text.count(fragment), "".join(console).count(fragment))

    return count
