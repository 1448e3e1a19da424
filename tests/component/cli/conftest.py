"""A real ``cloudcore serve`` (embedded store, the demo datacenter dc1 of simulated hosts) and a
way to run the ``cloudcore`` command line against it, each as a subprocess."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_START_TIMEOUT = 30.0
_RUN_TIMEOUT = 60.0


@dataclass
class Node:
    url: str
    token: str
    data_dir: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a CLI run against this node: its URL and admin token."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDCORE_")}
        env |= {"CLOUDCORE_API_URL": self.url, "CLOUDCORE_TOKEN": self.token}
        return env | extra

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cloudcore.app.cli", *args],
            capture_output=True,
            text=True,
            env=self.env() if env is None else env,
            timeout=_RUN_TIMEOUT,
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.cli(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result


class Lines:
    """The lines a subprocess writes to one pipe, read by a thread, awaited with a timeout."""

    def __init__(self, pipe: object) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: object) -> None:
        for line in pipe:  # type: ignore[attr-defined]
            self._queue.put(line)
        self._queue.put(None)

    def join(self, timeout: float = _START_TIMEOUT) -> None:
        self._thread.join(timeout)

    def next(self, timeout: float = _START_TIMEOUT) -> str:
        line = self._queue.get(timeout=timeout)
        if line is None:
            raise EOFError("the process closed its output")
        return line


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    data_dir = tmp_path_factory.mktemp("node")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDCORE_")}
    env |= {
        "CLOUDCORE_NODE__DATA_DIR": str(data_dir),
        "CLOUDCORE_STORE__AUTO_UPGRADE": "true",
        "CLOUDCORE_API__PORT": "0",
        "CLOUDCORE_LOG__FORMAT": "json",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudcore.app.cli", "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=data_dir,
    )
    lines = Lines(proc.stderr)
    try:
        url = ""
        while not url:
            record = json.loads(lines.next())
            if record.get("event") == "api.listening":
                url = str(record["url"])
        token = (data_dir / "admin-token").read_text().strip()
        yield Node(url=url, token=token, data_dir=data_dir)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=_START_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lines.join()
        if proc.stderr is not None:
            proc.stderr.close()
