"""The ``flex-emulator`` console script as a user runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from google import genai
from google.genai import types

from airflow_provider_flex.emulator.server import build_parser

BIN = Path(sys.executable).parent
EMULATOR_PAGE = Path(__file__).resolve().parents[2] / "docs" / "emulator.md"


def _flags() -> set[str]:
    return {opt for action in build_parser()._actions for opt in action.option_strings if opt.startswith("--")}


def test_console_script_serves_the_sdk():
    process = subprocess.Popen(
        [BIN / "flex-emulator", "--port", "0", "--slots", "2", "--service-time", "0.01:0.02", "--seed", "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.fullmatch(r"flex-emulator listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=match.group(1), timeout=10_000))
        response = client.models.generate_content(
            model="gemini-3-flash-preview", contents="hi", config={"service_tier": "flex"}
        )
        assert response.sdk_http_response.headers["x-gemini-service-tier"] == "flex"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slots", "0"], "slots must be at least 1"),
        (["--service-time", "2:1"], "service time must be MIN[:MAX]"),
        (["--service-time", "fast"], "expected MIN[:MAX]"),
        (["--preempt-rate", "1.5"], "preempt rate must be between 0 and 1"),
    ],
)
def test_bad_flags_get_a_clear_error(args, message):
    result = subprocess.run([BIN / "flex-emulator", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_and_readme_list_the_same_flags():
    help_text = subprocess.run([BIN / "flex-emulator", "--help"], capture_output=True, text=True, check=True).stdout
    documented = set(re.findall(r"^\| `(--[a-z-]+)", EMULATOR_PAGE.read_text(), flags=re.MULTILINE))
    assert documented == _flags() - {"--help"}
    assert all(flag in help_text for flag in documented)
