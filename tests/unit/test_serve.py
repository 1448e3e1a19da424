"""`cloudcore serve` as a user runs it: starts, logs, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
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


def _serve_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    return {
        **os.environ,
        "CLOUDCORE_NODE__ID": "serve-test",
        "CLOUDCORE_LOG__FORMAT": "json",
        "CLOUDCORE_NODE__DATA_DIR": str(tmp_path / "data"),
        "CLOUDCORE_STORE__AUTO_UPGRADE": "true",
        **overrides,
    }


def test_serve_on_a_taken_port_exits_at_once_naming_the_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        began = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "cloudcore.app.cli", "serve"],
            capture_output=True,
            text=True,
            env=_serve_env(tmp_path, CLOUDCORE_API__PORT=str(port)),
            timeout=30,
        )
        took = time.monotonic() - began
    assert result.returncode == 2
    assert took < 5.0
    assert f"api.port: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_short_admin_token_naming_the_variable(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cloudcore.app.cli", "serve"],
        capture_output=True,
        text=True,
        env=_serve_env(tmp_path, CLOUDCORE_ADMIN_TOKEN="short", CLOUDCORE_API__PORT="0"),
        timeout=30,
    )
    assert result.returncode == 2
    assert "CLOUDCORE_ADMIN_TOKEN must be at least 20 characters" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_keeps_its_data_directory_and_database_to_the_owner(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with subprocess.Popen(
        [sys.executable, "-m", "cloudcore.app.cli", "serve"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_serve_env(tmp_path, CLOUDCORE_API__PORT="0"),
    ) as proc:
        _stop_cleanly(proc)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [f for f in data.iterdir() if f.name.startswith("cloudcore.db")]
    assert files
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name


def test_sigterm_while_serve_waits_on_a_backend_ends_the_process(tmp_path: Path) -> None:
    """The start waits on an event bus that accepts the connection and never answers (a Redis
    hung or behind a black-holing proxy); a SIGTERM then ends the process at once, 128 + 15,
    instead of being ignored until the wait gives up."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen()
        hole.settimeout(30)
        port = hole.getsockname()[1]
        env = _serve_env(
            tmp_path,
            CLOUDCORE_API__PORT="0",
            CLOUDCORE_EVENTS__BACKEND="redis",
            CLOUDCORE_EVENTS__REDIS_URL=f"redis://127.0.0.1:{port}/0",
        )
        with subprocess.Popen(
            [sys.executable, "-m", "cloudcore.app.cli", "serve"],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        ) as proc:
            try:
                conn, _ = hole.accept()  # the node is in its start, waiting on the bus
                with conn:
                    began = time.monotonic()
                    proc.send_signal(signal.SIGTERM)
                    code = proc.wait(timeout=20)
                    took = time.monotonic() - began
                    assert proc.stderr is not None
                    log = proc.stderr.read()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    assert code == 128 + signal.SIGTERM, log[-2000:]
    assert took < 5.0, took
    assert '"signal": "SIGTERM"' in log and "node.interrupted" in log
    assert "node.started" not in log and "Traceback" not in log
