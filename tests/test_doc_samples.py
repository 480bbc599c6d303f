"""Every Python sample in README.md and docs/ runs as written, so a sample cannot rot.

Each fenced ``python`` block is executed in a fresh namespace, with the default connection pointing at the
emulator: operators and DAGs are built (and so checked at parse time), and the hook samples really call.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.hooks.conftest import connection, emulator, set_connection  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _samples() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            found.append((f"{doc.relative_to(ROOT)}:{line}", match.group(1)))
    return found


SAMPLES = _samples()


def test_the_docs_have_samples():
    assert len(SAMPLES) >= 10, [name for name, _ in SAMPLES]


@pytest.mark.usefixtures("connection")
@pytest.mark.parametrize(("where", "code"), SAMPLES, ids=[name for name, _ in SAMPLES])
def test_the_sample_runs(where, code, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, where, "exec"), {"__name__": "doc_sample"})
