"""A locked leg holds exactly its lock file: every package at its locked version, nothing more but the wheel.

``scripts/compat_matrix.py`` names the leg's lock in ``FLEX_MATRIX_LOCK``; a leg resolved afresh
(``make matrix-latest``) has none to match, and says so.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_locks():
    """Return scripts/locks.py as a module (the tools that write the locks read them the same way)."""
    spec = importlib.util.spec_from_file_location("locks", REPO / "scripts" / "locks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["locks"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_the_installed_set_is_the_lock():
    lock = os.environ.get("FLEX_MATRIX_LOCK")
    if not lock:
        pytest.skip("this leg was resolved afresh (make matrix-latest): it has no lock to match")
    locks = load_locks()
    pins = locks.read_lock(Path(lock))
    assert pins, f"{lock} pins nothing"
    assert locks.differences(pins, locks.installed_versions()) == []
