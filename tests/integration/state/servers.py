"""PostgreSQL and Redis servers of the test's own, to stop and start at will.

The machine's shared servers are never stopped: a restart test gets a private PostgreSQL cluster
(``initdb`` in a temporary directory, run as the ``postgres`` user when we are root) and a
private ``redis-server`` with an append-only file, each on a free port, and ends only the
processes it started.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, up: bool, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            is_up = s.connect_ex(("127.0.0.1", port)) == 0
        if is_up == up:
            return
        time.sleep(0.05)
    raise TimeoutError(f"127.0.0.1:{port} did not go {'up' if up else 'down'} in {timeout} s")


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    path = found[-1] if found else shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found: install PostgreSQL (scripts/test does)")
    return path


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary directory, on a free port, trust authentication."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cc-pg-"))
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(_postgres_bin("initdb"), "-D", str(self.root / "data"), "-A", "trust",
                  "-U", "postgres", "--no-sync")  # fmt: skip

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.root / "data"), "-o", options,
                  "-l", str(self.root / "log"), "-w", "start")  # fmt: skip
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w",
                  "stop")  # fmt: skip
        _wait_port(self.port, up=False)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A redis-server child process, on a free port, with an fsync-always append-only file
    (``persistent=False``: no file at all, a restart starts empty)."""

    def __init__(self, persistent: bool = True) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cc-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._persistent = persistent
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def start(self) -> None:
        aof = ["yes", "--appendfsync", "always"] if self._persistent else ["no"]
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.root), "--appendonly", *aof,
             "--save", "", "--daemonize", "no", "--logfile", str(self.root / "redis.log")],
        )  # fmt: skip
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()  # SIGTERM: Redis flushes the append-only file and exits
            self._process.wait(timeout=30)
            self._process = None
        _wait_port(self.port, up=False)

    def remove(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=30)
            self._process = None
        shutil.rmtree(self.root, ignore_errors=True)
