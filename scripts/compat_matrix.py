"""The compatibility matrix: the smoke suite (tests/compat) on each supported Airflow minor, from the wheel.

Each leg is a virtual environment of its own, built with uv (a leg takes seconds with uv's cache, about
two minutes with pip: docs/compatibility.md) and kept in ``.matrix/`` while what it installs stays the
same; the provider's wheel is reinstalled into it on every run, so what is tested is what a team would
install: ``pip install apache-airflow==X airflow-provider-flex``. Legs run one after another (they are
light beside the main test group); each writes ``.pytest-matrix-<leg>.log``.

Usage: ``python scripts/compat_matrix.py WHEEL [LEG ...]`` (all legs when none is named).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / ".matrix"
UV = Path(sys.executable).parent / "uv"
#: Where pyenv keeps the interpreters of this machine's image; the running Python stands in for a missing one.
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


@dataclass(frozen=True)
class Leg:
    """One environment of the matrix: a Python version and what is pinned beside the wheel."""

    name: str
    python: str
    pins: tuple[str, ...]
    #: What that Airflow release's constraints file holds back, where a newer release of a library breaks it
    #: (a team installs Airflow with its constraints file; these are the pins that matter, with the reason).
    held_back: tuple[str, ...] = ()
    #: Whether the leg also runs the real deployment (tests/compat/test_deployment.py, about a minute of CPU).
    deployment: bool = False

    @property
    def suites(self) -> tuple[str, ...]:
        return ("tests/compat",) if self.deployment else ("tests/compat/test_smoke.py",)


#: The newest patch of each supported Airflow minor, and the floors of google-genai and tenacity. Python
#: 3.10 (the oldest the provider declares) on 3.0, 3.12 on 3.2; 3.11 elsewhere.
#: Airflow 3.0's Task SDK client sends JSON without a Content-Type, which FastAPI 0.132 and newer refuse
#: (strict_content_type): no task can start. Airflow 3.2.2 declares no upper bound on FastAPI, and its
#: execution API cannot be built with FastAPI 0.137+ (``TITerminalStatePayload needs a discriminator
#: field``; Airflow 3.3 declares ``fastapi<0.137``), nor serve a task with svcs 26 (its in-process API
#: never gets its ``svcs_registry``). None of these involves this provider.
FASTAPI_FOR_AIRFLOW_3_0 = "fastapi<0.132"
HELD_BACK_FOR_AIRFLOW_3_2 = ("fastapi<0.137", "svcs<26")
#: A real deployment runs on 3.0 and 3.1: between them they take every branch of compat.py below 3.3
#: (3.2 takes 3.1's); on 3.3 the main suite's tests/integration run one.
LEGS = (
    Leg("airflow-3.0", "3.10", ("apache-airflow==3.0.6",), (FASTAPI_FOR_AIRFLOW_3_0,), deployment=True),
    Leg("airflow-3.1", "3.11", ("apache-airflow==3.1.8",), deployment=True),
    Leg("airflow-3.2", "3.12", ("apache-airflow==3.2.2",), HELD_BACK_FOR_AIRFLOW_3_2),
    Leg("airflow-3.3", "3.11", ("apache-airflow==3.3.2",)),
    Leg(
        "oldest-sdk",
        "3.11",
        ("apache-airflow==3.0.6", "google-genai==1.69.0", "tenacity==8.2.3"),
        (FASTAPI_FOR_AIRFLOW_3_0,),
    ),
)


#: The smoke suite alone, with no conftest above it (the main suite's) and pyproject's addopts less its
#: ``--ignore=tests/compat``.
SUITE_ARGS = (
    "-p",
    "no:cacheprovider",
    "-o",
    "addopts=-ra --strict-markers",
    "--confcutdir",
    "tests/compat",
)


def interpreter(version: str) -> tuple[str, str]:
    """Return the path of a Python ``version`` interpreter, and the version it really is."""
    for candidate in sorted(PYENV.glob(f"{version}.*"), reverse=True):
        python = candidate / "bin" / "python"
        if python.exists():
            return str(python), version
    found = shutil.which(f"python{version}")
    if found:
        return found, version
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    print(f"Python {version} is not on this machine: this leg runs on Python {running}", flush=True)
    return sys.executable, running


def wheel_requirements(wheel: Path) -> list[str]:
    """Return the wheel's Requires-Dist lines: a leg's environment is rebuilt when they change."""
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    return sorted(line for line in text.splitlines() if line.startswith("Requires-Dist:"))


def run(*command: str | Path, log: Path) -> None:
    """Run a set-up command, its output appended to ``log``; raise with the log's tail when it fails."""
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(map(str, command))}\n")
        handle.flush()
        result = subprocess.run([str(part) for part in command], stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command[:3]))} ... failed:\n{log.read_text()[-3000:]}")


def prepare(leg: Leg, wheel: Path, log: Path) -> Path:
    """Return the leg's python, its environment built (or reused) with the wheel installed fresh."""
    python, version = interpreter(leg.python)
    key = hashlib.sha256(json.dumps([python, leg, wheel_requirements(wheel)], default=str).encode()).hexdigest()[:16]
    env = ENVS / leg.name
    stamp = env / ".matrix-key"
    if not (stamp.exists() and stamp.read_text() == key):
        shutil.rmtree(env, ignore_errors=True)
        run(UV, "venv", "--quiet", "--python", python, env, log=log)
        run(
            UV,
            "pip",
            "install",
            "--python",
            env / "bin" / "python",
            f"{wheel}[examples]",
            *leg.pins,
            *leg.held_back,
            "pytest",
            log=log,
        )
        stamp.write_text(key)
    run(UV, "pip", "install", "--python", env / "bin" / "python", "--reinstall", "--no-deps", wheel, log=log)
    run(UV, "pip", "check", "--python", env / "bin" / "python", log=log)
    with log.open("a") as handle:
        handle.write(f"leg {leg.name}: Python {version}, {' '.join((*leg.pins, *leg.held_back))}\n")
    return env / "bin" / "python"


def run_leg(leg: Leg, wheel: Path) -> bool:
    """Build the leg's environment and run the smoke suite in it; return whether it passed."""
    log = ROOT / f".pytest-matrix-{leg.name}.log"
    log.write_text("")
    started = time.monotonic()
    try:
        python = prepare(leg, wheel, log)
    except RuntimeError as failure:
        print(f"[{leg.name}] environment could not be built: {failure}", flush=True)
        return False
    built = time.monotonic() - started
    with log.open("a") as handle:
        result = subprocess.run(
            # the environment's pytest script, not ``python -m pytest``: that would put the source tree on sys.path
            [str(python.parent / "pytest"), *SUITE_ARGS, *leg.suites],
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
        )
    closing = log.read_text().strip().splitlines()[-1]
    print(f"[{leg.name}] environment {built:.0f}s, suite {time.monotonic() - started - built:.0f}s: {closing}")
    return result.returncode == 0


def main(argv: list[str]) -> int:
    if not argv:
        sys.exit(__doc__)
    wheel = Path(argv[0]).resolve()
    names = set(argv[1:])
    unknown = names - {leg.name for leg in LEGS}
    if unknown:
        sys.exit(f"unknown leg(s) {sorted(unknown)}; the legs are {[leg.name for leg in LEGS]}")
    results = [run_leg(leg, wheel) for leg in LEGS if not names or leg.name in names]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
