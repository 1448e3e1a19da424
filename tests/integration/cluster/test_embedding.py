"""The README's embedding example, run for real: a worker node and an aiohttp service."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.cluster.conftest import ROOT
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(60)

EXAMPLE = Path(__file__).with_name("embedding_example.py")
MARKER = "<!-- example: cluster-embedding -->"


def test_the_readme_shows_this_example() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    if MARKER not in readme:
        pytest.skip("the README has no cluster embedding section yet")
    block = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)```", readme, re.DOTALL)
    assert block is not None, "the marker must precede a ```python block"
    assert block.group(1) == EXAMPLE.read_text(encoding="utf-8")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def launch(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, str(EXAMPLE), *args], env=env, stdout=out, stderr=out, cwd=ROOT
        )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if proc is procs[0] else signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def test_the_embedding_example_serves_cluster_actors_over_http(
    amqp_url: str, exchange: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    base = {
        **os.environ,
        "CLOUDCORE_TRANSPORT__KIND": "amqp",
        "CLOUDCORE_TRANSPORT__AMQP_URL": amqp_url,
        "CLOUDCORE_TRANSPORT__EXCHANGE": exchange,
        "CLOUDCORE_NODE__DATA_DIR": str(tmp_path),
        "CLOUDCORE_CLUSTER__HEARTBEAT_INTERVAL": "0.25",
        "CLOUDCORE_CLUSTER__NODE_TIMEOUT": "1.5",
        "PORT": str(port),
    }
    worker_env = {
        **base,
        "CLOUDCORE_NODE__ID": "worker-1",
        "CLOUDCORE_NODE__CAPABILITIES": '{ role = "worker" }',
    }
    processes.append(launch(["worker"], worker_env, tmp_path / "worker.log"))
    processes.append(launch([], {**base, "CLOUDCORE_NODE__ID": "web-1"}, tmp_path / "web.log"))

    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:

        async def worker_up() -> bool:
            try:
                async with http.get("/cluster") as response:
                    view = await response.json()
            except aiohttp.ClientConnectionError:
                return False
            return bool(view.get("worker-1", {}).get("status") == "up")

        await eventually(worker_up, timeout=20, interval=0.1)
        totals = []
        for n in (2, 3):
            async with http.post(f"/add/{n}") as response:
                assert response.status == 200, (tmp_path / "web.log").read_text()
                totals.append(await response.json())
    assert totals == [{"total": 2, "node": "worker-1"}, {"total": 5, "node": "worker-1"}]
    # Logs to a file are JSON lines, as the README says, without log.format forcing it.
    for name in ("worker.log", "web.log"):
        lines = (tmp_path / name).read_text().splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert records and all("event" in r and "level" in r for r in records), lines
        assert not any("[info" in line or "[debug" in line for line in lines), lines
