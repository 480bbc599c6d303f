"""The development environment (``.venv``, where this suite runs) holds exactly ``locks/dev.txt``.

``make install`` syncs the venv to the lock and installs the provider beside it with ``--no-deps``: no
package is resolved, so no upstream release can change what the suite runs on. The lock's own rules
(every line an exact pin) are checked here too, since a hand-edited range would resolve again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.compat.test_locked import load_locks

REPO = Path(__file__).resolve().parents[1]
locks = load_locks()


def test_the_development_environment_is_its_lock():
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip(f"not run from the project's .venv ({sys.prefix}): nothing to hold to locks/dev.txt")
    assert locks.differences(locks.read_lock(REPO / "locks" / "dev.txt"), locks.installed_versions()) == []


def test_every_environment_has_a_lock_of_exact_pins():
    environments = locks.load_environments()
    assert {"dev", "airflow-3.0", "airflow-3.3", "oldest-sdk"} <= environments.keys()
    for environment in environments.values():
        pins = locks.read_lock(environment.lock)
        for requirement in environment.requirements:
            name, _, version = requirement.partition("==")
            if version:  # what the environment pins by name is what its lock holds
                assert pins[locks.canonical(name)] == version, (environment.name, requirement)
    # the holds are in force: Airflow 3.0 and 3.1 cannot live with cryptography 51
    for name in ("airflow-3.0", "airflow-3.1", "oldest-sdk"):
        assert int(locks.read_lock(environments[name].lock)["cryptography"].split(".")[0]) < 51


def test_a_line_that_is_not_an_exact_pin_is_refused(tmp_path):
    lock = tmp_path / "bad.txt"
    lock.write_text("fastapi==0.131.0\n    # via x\nhttpx>=0.27\n")
    with pytest.raises(ValueError, match=r"bad.txt:3: 'httpx>=0.27' is not an exact pin"):
        locks.read_lock(lock)


def test_differences_name_each_package():
    lock = {"a": "1.0", "b": "2.0", "airflow-provider-flex": "0.3"}
    installed = {"a": "1.1", "c": "3.0"}
    assert locks.differences(lock, installed) == [
        "a is 1.1, the lock says 1.0",
        "b==2.0 is locked but not installed",
        "c==3.0 is installed but not in the lock",
    ]
