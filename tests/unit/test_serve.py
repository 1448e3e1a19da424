"""`cloudcore serve` as a user runs it: starts, logs, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _wait_for_line(
    proc: subprocess.Popen[str], event: str, timeout: float = 20.0
) -> dict[str, object]:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        record = json.loads(line)
        if record.get("event") == event:
            return dict(record)
    raise AssertionError(f"no {event} log line from cloudcore serve")


def test_serve_starts_a_node_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CLOUDCORE_NODE__ID": "serve-test",
        "CLOUDCORE_LOG__FORMAT": "json",
        "CLOUDCORE_NODE__DATA_DIR": str(tmp_path),
        "CLOUDCORE_STORE__AUTO_UPGRADE": "true",
        "CLOUDCORE_API__PORT": "0",
    }
    with subprocess.Popen(
        [sys.executable, "-m", "cloudcore.app.cli", "serve"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as proc:
        _stop_cleanly(proc)


def _stop_cleanly(proc: subprocess.Popen[str]) -> None:
    try:
        started = _wait_for_line(proc, "node.started")
        assert started["node"] == "serve-test"
        proc.send_signal(signal.SIGTERM)
        _wait_for_line(proc, "node.stopped")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_a_bad_setting_naming_it() -> None:
    env = {**os.environ, "CLOUDCORE_RUNTIME__ASK_TIMEOUT": "never", "CLOUDCORE_LOG__FORMAT": "json"}
    result = subprocess.run(
        [sys.executable, "-m", "cloudcore.app.cli", "serve"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 2
    assert "runtime.ask_timeout" in result.stderr
