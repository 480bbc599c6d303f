"""A real PostgreSQL cluster (Debian's package) in a temporary directory on a free port. No fake database.

These machines run tests as root, and PostgreSQL refuses to run as root, so the cluster belongs to
the unprivileged ``nobody`` user: its directory is made in ``/tmp`` (``nobody`` cannot enter
pytest's root-only folders) and given to that user, and ``initdb`` and ``postgres`` run as it.
Durability is off (``fsync``, ``synchronous_commit``): a test database, rebuilt every run.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.deployment import StartedService, free_port

DATABASE = "airflow"
USER = "airflow"


def postgres_binaries() -> Path | None:
    """Debian keeps PostgreSQL's programs out of PATH, under /usr/lib/postgresql/<version>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PostgresServer(StartedService):
    """``with PostgresServer() as db:`` a running cluster with database ``airflow``; ``db.url`` for SQLAlchemy."""

    def __init__(self, run_as: str = "nobody") -> None:
        binaries = postgres_binaries()
        if binaries is None:
            raise RuntimeError("PostgreSQL is not installed: `make test` installs Debian's postgresql")
        self.binaries = binaries
        self.account = pwd.getpwnam(run_as)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="flex-postgres-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={DATABASE} user={USER}"

    @property
    def celery_result_backend(self) -> str:
        return f"db+postgresql+psycopg2://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _as_owner(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            user=self.account.pw_uid,
            group=self.account.pw_gid,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "HOME": str(self.root)},
            cwd=self.root,
            capture_output=True,
            text=True,
            check=True,
            **kwargs,
        )

    def start(self) -> PostgresServer:
        os.chown(self.root, self.account.pw_uid, self.account.pw_gid)
        data = self.root / "data"
        self._as_owner(
            str(self.binaries / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8",
            "--locale=C", timeout=120,
        )  # fmt: skip
        log = (self.root / "postgres.log").open("wb")
        self.process = subprocess.Popen(
            [
                str(self.binaries / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.root),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=300",
            ],
            user=self.account.pw_uid,
            group=self.account.pw_gid,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            start_new_session=True,
        )  # fmt: skip
        self._wait_ready()
        self._as_owner(str(self.binaries / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE)
        return self

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run(
                [str(self.binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
            )
            if ready.returncode == 0:
                return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.root / 'postgres.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres did not accept connections in {timeout}s")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: clients are cut off
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.root, ignore_errors=True)
