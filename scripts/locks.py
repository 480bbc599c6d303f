"""The lock files: every environment this project builds, compiled to exact versions and checked against them.

``locks/environments.toml`` says what each environment asks for (the development ``.venv`` and each leg
of the compatibility matrix) and what each Airflow release's constraints hold back; ``make lock`` writes
``locks/<name>.txt`` for each with ``uv pip compile``, keeping every pin it can (adding a hold moves only
what the hold must move); ``make lock-upgrade`` takes the newest of everything within the holds.
Installing never resolves: ``uv pip sync locks/<name>.txt``, then the provider with ``--no-deps``.

Usage: ``python scripts/locks.py [--upgrade] [NAME ...]`` (every environment when none is named).
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "locks"
ENVIRONMENTS = LOCKS / "environments.toml"
UV = Path(sys.executable).parent / "uv"
#: Installed beside a lock, not from it: the provider itself (editable or the wheel under test).
NOT_LOCKED = frozenset({"airflow-provider-flex"})
#: A lock is resolved for this platform, the one every machine of this project runs on.
PLATFORM = "linux"


@dataclass(frozen=True)
class Environment:
    """One environment: its Python, the provider's extras it installs, what it adds, what it holds back."""

    name: str
    python: str
    extras: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    holds: tuple[str, ...] = ()
    deployment: bool = False

    @property
    def lock(self) -> Path:
        return LOCKS / f"{self.name}.txt"


def load_environments(path: Path = ENVIRONMENTS) -> dict[str, Environment]:
    """Return every environment of ``locks/environments.toml`` by name, ``dev`` first, then the legs."""
    import tomllib  # Python 3.11+: only the tools that make or read the table need it, not a leg's tests

    table = tomllib.loads(path.read_text())
    entries = {"dev": table["dev"], **table.get("legs", {})}
    return {
        name: Environment(
            name=name,
            python=entry["python"],
            extras=tuple(entry.get("extras", ())),
            requirements=tuple(entry.get("requirements", ())),
            holds=tuple(entry.get("holds", ())),
            deployment=bool(entry.get("deployment", False)),
        )
        for name, entry in entries.items()
    }


def canonical(name: str) -> str:
    """Return a distribution name as the package index compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """Return the exact version of every package a lock file pins, by canonical name."""
    return parse_pins(path.read_text(), origin=str(path))


def parse_pins(text: str, origin: str) -> dict[str, str]:
    """Return the ``name==version`` lines of a lock (or of ``pip freeze``) by canonical name; raise on any other line."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, separator, version = line.partition("==")
        if not separator or ";" in version or not version.strip():
            raise ValueError(f"{origin}:{number}: {raw!r} is not an exact pin (name==version)")
        pins[canonical(name.split("[", 1)[0])] = version.strip()
    return pins


def installed_versions() -> dict[str, str]:
    """Return every distribution installed in the running interpreter's environment, by canonical name."""
    return {canonical(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()}


def differences(lock: dict[str, str], installed: dict[str, str], not_locked: frozenset[str] = NOT_LOCKED) -> list[str]:
    """Return how an installed set differs from its lock, one line a package (empty when they are equal)."""
    lines = []
    for name in sorted(lock.keys() | installed.keys()):
        if name in not_locked:
            continue
        locked, present = lock.get(name), installed.get(name)
        if locked == present:
            continue
        if present is None:
            lines.append(f"{name}=={locked} is locked but not installed")
        elif locked is None:
            lines.append(f"{name}=={present} is installed but not in the lock")
        else:
            lines.append(f"{name} is {present}, the lock says {locked}")
    return lines


def compile_command(environment: Environment, holds_file: Path, output: Path, upgrade: bool) -> list[str]:
    """Return the ``uv pip compile`` command that writes ``environment``'s lock (its extra requirements on stdin)."""
    command = [str(UV), "pip", "compile", "pyproject.toml", "-", "--python-version", environment.python]
    command += ["--python-platform", PLATFORM, "--custom-compile-command", "make lock", "-o", str(output)]
    for extra in environment.extras:
        command += ["--extra", extra]
    if environment.holds:
        command += ["-c", str(holds_file)]
    if upgrade:
        command.append("--upgrade")
    return command


def write_lock(environment: Environment, upgrade: bool = False) -> Path:
    """Compile ``environment``'s lock file in place and return its path."""
    with tempfile.TemporaryDirectory() as scratch:
        holds_file = Path(scratch) / "holds.txt"
        holds_file.write_text("".join(f"{hold}\n" for hold in environment.holds))
        command = compile_command(environment, holds_file, environment.lock, upgrade)
        stdin = "".join(f"{requirement}\n" for requirement in environment.requirements)
        result = subprocess.run(command, cwd=ROOT, input=stdin, text=True, capture_output=True)
        if result.returncode != 0:
            raise SystemExit(f"locking {environment.name} failed:\n{result.stderr}")
        # the holds came through a temporary file: name where they really live
        text = environment.lock.read_text().replace(f"-c {holds_file}", f"-c holds of {environment.name}")
    environment.lock.write_text(text)
    read_lock(environment.lock)  # every line an exact pin, or the lock is not written as complete
    return environment.lock


def main(argv: list[str]) -> int:
    upgrade = "--upgrade" in argv
    names = [arg for arg in argv if arg != "--upgrade"]
    environments = load_environments()
    unknown = set(names) - environments.keys()
    if unknown:
        sys.exit(f"unknown environment(s) {sorted(unknown)}; locks/environments.toml has {list(environments)}")
    for name, environment in environments.items():
        if not names or name in names:
            path = write_lock(environment, upgrade=upgrade)
            print(f"{path.relative_to(ROOT)}: {len(read_lock(path))} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
