"""A real Airflow deployment for tests: api-server, scheduler, dag-processor and triggerer processes.

Each runs as its own process in a temporary home, as in `airflow standalone` but with every
component's console in its own file, so a test can tell which process did what. State is read
straight from the metadata database. Two shapes: LocalExecutor on SQLite (the default), or
CeleryExecutor on PostgreSQL with a Redis broker and ``celery_workers`` `airflow celery worker`
processes, each with its own name, log server port and console.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

AIRFLOW = Path(sys.executable).parent / "airflow"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
FINISHED = {"success", "failed"}


def airflow_env(home: Path, dags_folder: Path, **settings: str) -> dict[str, str]:
    """Environment for an Airflow process of its own: ``home``, ``dags_folder``, no examples, plus ``settings``.

    Drops pytest's unit-test mode, which a real `airflow` process must not inherit.
    """
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **settings,
    }
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    return env


def link_dags(folder: Path, sources: Iterable[Path]) -> Path:
    """A DAGs folder of symlinks to ``sources`` (``__pycache__`` left out); the folder."""
    folder.mkdir(parents=True)
    for source in sources:
        if source.name != "__pycache__":
            (folder / source.name).symlink_to(source)
    return folder


def files_holding(root: Path, needle: bytes) -> tuple[list[str], list[Path]]:
    """Return the files under ``root`` whose bytes hold ``needle``, and every file read.

    A running deployment's SQLite keeps ``-wal`` and ``-journal`` files that come and go between listing a
    folder and reading it; a file gone by then is skipped and the whole folder read again, so the pages it
    held are read in ``airflow.db`` once checkpointed there.
    """
    for _ in range(5):
        holding, read, vanished = [], [], False
        for path in (p for p in root.rglob("*") if p.is_file()):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                vanished = True
                continue
            read.append(path)
            if needle in data:
                holding.append(str(path))
        if not vanished:
            break
    return holding, read


def _postgres_errors() -> tuple[type[Exception], ...]:
    try:
        import psycopg2
    except ImportError:
        return ()
    return (psycopg2.errors.UndefinedTable, psycopg2.OperationalError)


@dataclass(frozen=True)
class CeleryShape:
    """CeleryExecutor on a PostgreSQL metadata database, a Redis broker and named workers."""

    database: Any  # tests.postgres_server.PostgresServer
    broker_url: str
    workers: tuple[str, ...] = ("w1", "w2")
    concurrency: int = 8

    def settings(self) -> dict[str, str]:
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database.url,
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": self.database.celery_result_backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StartedService:
    """``with Service(...) as service:`` for the test services: started on entry, stopped on exit, and stopped
    too when starting fails half-way (no process left behind)."""

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class AirflowDeployment(StartedService):
    """Start with ``with AirflowDeployment(home, dags_folder, env) as airflow:``."""

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        env: Mapping[str, str],
        *,
        celery: CeleryShape | None = None,
    ) -> None:
        self.home = home
        self.celery = celery
        api_port = free_port()
        shape = celery.settings() if celery is not None else {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
        self.env = airflow_env(
            home,
            dags_folder,
            **shape,
            AIRFLOW__CORE__PARALLELISM="8",
            AIRFLOW__API__PORT=str(api_port),
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
            **env,
        )
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        #: Components a test killed on purpose (not a failure of the deployment).
        self.killed: set[str] = set()
        #: Processes seen under the components, killed at the end if still alive.
        self.descendants: set[Any] = set()

    def cli(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        return result.stdout

    def start(self, timeout: float = 180) -> AirflowDeployment:
        self.home.mkdir(parents=True, exist_ok=True)
        self.cli("db", "migrate")
        commands = {component: [component] for component in COMPONENTS}
        environments = dict.fromkeys(COMPONENTS, self.env)
        for name in self.celery.workers if self.celery is not None else ():
            commands[f"worker-{name}"] = ["celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency",
                                          str(self.celery.concurrency)]  # fmt: skip
            environments[f"worker-{name}"] = {
                **self.env,
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "FLEX_WORKER_NAME": name,  # read by a test's [core] hostname_callable, if it sets one
            }
        for component, command in commands.items():
            with self.console(component).open("wb") as console:
                self.processes[component] = subprocess.Popen(
                    [AIRFLOW, *command],
                    env=environments[component],
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        deadline = time.monotonic() + timeout
        while not self._api_healthy():
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the api-server did not answer in {timeout}s; see {self.console('api-server')}")
            time.sleep(0.5)
        return self

    def stop(self) -> None:
        """Stop every component, then anything still alive under them (task runners sit in process groups
        of their own, and a killed worker's orphans are no longer under it: they were found when killed)."""
        import psutil

        for process in self.processes.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                self.descendants.update(psutil.Process(process.pid).children(recursive=True))
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for leftover in self.descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()

    def kill(self, component: str, *, machine: bool = False) -> None:
        """SIGKILL a component's process group (``kill -9`` of a Celery worker and its pool), or with
        ``machine`` every process under it, as a lost machine loses them.

        The group alone leaves task runners alive: Airflow's supervisor puts each in a group of its own, so
        they go on as orphans.
        """
        import psutil

        self.killed.add(component)
        root = psutil.Process(self.processes[component].pid)
        self.descendants.update(root.children(recursive=True))
        if machine:
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
        else:
            os.killpg(root.pid, signal.SIGKILL)
        self.processes[component].wait()

    def console(self, component: str) -> Path:
        return self.home / f"{component}.console.log"

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Until the dag-processor has serialized ``dag_id``."""
        self._wait(lambda: self.query("SELECT 1 FROM serialized_dag WHERE dag_id = ?", dag_id), timeout, dag_id)

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, logical_date: str | None = None) -> str:
        """Unpause and trigger ``dag_id`` (at ``logical_date``, an ISO time, if given); the new run's id.

        Unpausing a scheduled DAG also lets the scheduler start its latest scheduled run; a run that must not
        share that run's day (an output folder named by ``ds``) gives a ``logical_date`` of another day.
        """
        self.wait_for_dag(dag_id)
        self.cli("dags", "unpause", dag_id)
        when = ["--logical-date", logical_date] if logical_date else []
        output = self.cli("dags", "trigger", dag_id, "--conf", json.dumps(dict(conf or {})), *when, "--output", "json")
        return json.loads(output[output.index("[{") :])[0]["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """The run's final state, once it has one."""

        def finished() -> str | None:
            rows = self.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", dag_id, run_id)
            return rows[0][0] if rows and rows[0][0] in FINISHED else None

        return self._wait(finished, timeout, f"{dag_id} run {run_id}")

    def query(self, sql: str, *params: Any) -> list[tuple]:
        """Read the metadata database (``?`` placeholders, on SQLite and PostgreSQL alike)."""
        if self.celery is not None:
            import psycopg2

            with psycopg2.connect(self.celery.database.dsn) as db, db.cursor() as cursor:
                cursor.execute(sql.replace("?", "%s"), params)
                return cursor.fetchall()
        with sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True, timeout=30) as db:
            return db.execute(sql, params).fetchall()

    def _wait(self, check: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                found = check()
            except (sqlite3.OperationalError, *_postgres_errors()):  # database locked or a table not there yet
                found = None
            if found:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout}s for {what}; consoles in {self.home}")
            time.sleep(0.5)

    def _api_healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/api/v2/monitor/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _check_alive(self) -> None:
        for component, process in self.processes.items():
            if component not in self.killed and process.poll() is not None:
                tail = self.console(component).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"airflow {component} exited with {process.returncode}:\n{tail}")
