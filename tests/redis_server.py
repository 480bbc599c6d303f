"""A real redis-server (Debian's package) on a free port, for the shared-quota tests. No fake Redis."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.deployment import free_port


class RedisServer:
    """``redis-server`` in the foreground on a free loopback port; stop and start it again on the same port."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: `make test` installs Debian's redis-server")
        self.binary = binary
        self.workdir = workdir
        self.password = password
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.workdir)]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                return self
            except redis.RedisError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2)

    def connection_json(self, password: str | None = None) -> str:
        """This server as an Airflow ``redis`` connection (``password`` overrides the right one)."""
        return json.dumps(
            {"conn_type": "redis", "host": "127.0.0.1", "port": self.port, "password": password or self.password}
        )

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
