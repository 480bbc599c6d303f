"""The flex emulator in a process of its own, so a benchmark measures the client alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from airflow_provider_flex.emulator.admin import EmulatorAdmin

FLEX_EMULATOR = Path(sys.executable).parent / "flex-emulator"


@contextmanager
def emulator_process(*flags: str) -> Iterator[EmulatorAdmin]:
    """``flex-emulator --port 0 FLAGS`` running until the block ends; yields its admin client."""
    process = subprocess.Popen([FLEX_EMULATOR, "--port", "0", *flags], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            raise RuntimeError(f"flex-emulator did not start: {line!r}")
        admin = EmulatorAdmin(match.group(1))
        try:
            yield admin
        finally:
            admin.close()
    finally:
        process.terminate()
        process.wait(timeout=15)


def use_connection(conn_id: str, base_url: str, api_key: str = "bench-key", **extra: Any) -> None:
    """Define a gemini_flex connection in this process's environment, as a deployment would."""
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
        {"conn_type": "gemini_flex", "host": base_url, "password": api_key, "extra": extra}
    )
