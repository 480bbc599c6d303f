"""The compatibility matrix: the smoke suite (tests/compat) on each supported Airflow minor, from the wheel.

Each leg is a virtual environment of its own (``locks/environments.toml`` names them), built with uv and
kept in ``.matrix/``: ``uv pip sync locks/<leg>.txt`` installs exactly the leg's lock (a no-op while it
is in place), then the provider's wheel with ``--no-deps``, so what is tested is the locked set and the
wheel a team would install. Nothing is resolved: no upstream release can change what a leg runs on.

``--latest`` resolves each leg afresh instead (the holds kept; ``.matrix-latest/``, rebuilt every time),
runs the same suite and reports, per leg, what broke and which packages differ from the lock: an
upstream break becomes a report to act on (``make matrix-latest``), never a red ``make test``.
Legs run one after another; each writes ``.pytest-matrix-<leg>.log`` (``-latest-`` for ``--latest``).

Usage: ``python scripts/compat_matrix.py [--latest] WHEEL [LEG ...]`` (all legs when none is named).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from locks import ROOT, UV, Environment, differences, load_environments, parse_pins, read_lock

#: Where pyenv keeps the interpreters of this machine's image; the running Python stands in for a missing one.
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
#: The legs: every environment of locks/environments.toml but the development one.
LEGS = tuple(environment for name, environment in load_environments().items() if name != "dev")


def suites(leg: Environment) -> tuple[str, ...]:
    """Return the test paths a leg runs: the real deployment too where the leg asks for it."""
    return ("tests/compat",) if leg.deployment else ("tests/compat/test_smoke.py", "tests/compat/test_locked.py")


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


def run(*command: str | Path, log: Path) -> None:
    """Run a set-up command, its output appended to ``log``; raise with the log's tail when it fails."""
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(map(str, command))}\n")
        handle.flush()
        result = subprocess.run([str(part) for part in command], stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command[:3]))} ... failed:\n{log.read_text()[-3000:]}")


def environment_folder(leg: Environment, python: str, latest: bool) -> Path:
    """Return the leg's virtual environment, made anew when missing, on another Python, or for ``--latest``."""
    env = ROOT / (".matrix-latest" if latest else ".matrix") / leg.name
    stamp = env / ".matrix-python"
    if latest or not (stamp.exists() and stamp.read_text() == python):
        shutil.rmtree(env, ignore_errors=True)
        env.mkdir(parents=True)
    return env


def prepare(leg: Environment, wheel: Path, log: Path, latest: bool) -> Path:
    """Return the leg's python, its environment holding exactly the lock (or, ``latest``, the newest within the holds) and the wheel."""
    python, version = interpreter(leg.python)
    env = environment_folder(leg, python, latest)
    target = env / "bin" / "python"
    if not target.exists():
        run(UV, "venv", "--quiet", "--allow-existing", "--python", python, env, log=log)
        (env / ".matrix-python").write_text(python)
    if latest:
        run(
            UV,
            "pip",
            "install",
            "--refresh",
            "--python",
            target,
            f"{wheel}[{','.join(leg.extras)}]",
            *leg.requirements,
            *leg.holds,
            log=log,
        )
    else:  # the lock, then the wheel fresh on every run (the environment is reused; a fresh --latest one has it)
        run(UV, "pip", "sync", "--python", target, leg.lock, log=log)
        run(UV, "pip", "install", "--python", target, "--reinstall", "--no-deps", wheel, log=log)
    run(UV, "pip", "check", "--python", target, log=log)
    with log.open("a") as handle:
        source = "newest releases within " + (" ".join(leg.holds) or "no holds") if latest else str(leg.lock)
        handle.write(f"leg {leg.name}: Python {version}, {' '.join(leg.requirements)}, from {source}\n")
    return target


def installed(python: Path) -> dict[str, str]:
    """Return what a leg's environment holds, by canonical name (``uv pip freeze``)."""
    frozen = subprocess.run([str(UV), "pip", "freeze", "--python", str(python)], capture_output=True, text=True)
    return parse_pins("\n".join(line for line in frozen.stdout.splitlines() if "==" in line), origin=str(python))


def run_leg(leg: Environment, wheel: Path, latest: bool = False) -> bool:
    """Build the leg's environment and run the smoke suite in it; return whether it passed."""
    log = ROOT / f".pytest-matrix-{'latest-' if latest else ''}{leg.name}.log"
    log.write_text("")
    started = time.monotonic()
    try:
        python = prepare(leg, wheel, log, latest)
    except RuntimeError as failure:
        print(f"[{leg.name}] environment could not be built: {failure}", flush=True)
        return False
    built = time.monotonic() - started
    # the locked leg's own test (tests/compat/test_locked.py) checks the installed set against this file
    lock_env = {} if latest else {"FLEX_MATRIX_LOCK": str(leg.lock)}
    with log.open("a") as handle:
        result = subprocess.run(
            # the environment's pytest script, not ``python -m pytest``: that would put the source tree on sys.path
            [str(python.parent / "pytest"), *SUITE_ARGS, *suites(leg)],
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "", **lock_env},
        )
    closing = log.read_text().strip().splitlines()[-1]
    print(f"[{leg.name}] environment {built:.0f}s, suite {time.monotonic() - started - built:.0f}s: {closing}")
    if latest:
        report_latest(leg, python, log, passed=result.returncode == 0)
    return result.returncode == 0


def report_latest(leg: Environment, python: Path, log: Path, passed: bool) -> None:
    """Print what a freshly resolved leg broke and which packages moved from its lock: the suspects."""
    moved = differences(read_lock(leg.lock), installed(python))
    print(
        f"  {'passes' if passed else 'BREAKS'} on the newest releases; {len(moved)} package(s) differ from {leg.lock.name}"
    )
    failures = [line for line in log.read_text().splitlines() if line.startswith(("FAILED ", "ERROR "))]
    for line in failures:
        print(f"  {line}")
    for line in moved[:40]:
        print(f"  moved: {line}")
    if not passed:
        print(f'  act on it: add a hold to [legs."{leg.name}"] in locks/environments.toml, or fix the provider')


def main(argv: list[str]) -> int:
    latest = "--latest" in argv
    argv = [arg for arg in argv if arg != "--latest"]
    if not argv:
        sys.exit(__doc__)
    wheel = Path(argv[0]).resolve()
    names = set(argv[1:])
    unknown = names - {leg.name for leg in LEGS}
    if unknown:
        sys.exit(f"unknown leg(s) {sorted(unknown)}; the legs are {[leg.name for leg in LEGS]}")
    results = [run_leg(leg, wheel, latest) for leg in LEGS if not names or leg.name in names]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
