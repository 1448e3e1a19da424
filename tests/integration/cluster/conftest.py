"""Real RabbitMQ for the cluster tests: a vhost of their own, node processes, a pytest node.

The session gets a fresh vhost on the shared broker (``rabbitmqctl add_vhost``), deleted at the
end; each test gets its own exchange name inside it. A test that stops the broker asks for
``private_broker`` instead: a RabbitMQ node of its own (see ``broker.py``), which its node
processes and pytest node then use. Node processes run ``node_main`` and are killed by PID.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote

import pytest

from cloudcore.cluster import ClusterNode
from cloudcore.logging import configure_logging
from tests.integration.cluster.actors import Counter, registry
from tests.integration.cluster.broker import PrivateBroker
from tests.integration.cluster.node_main import settings

ROOT = Path(__file__).resolve().parents[3]


def _broker_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    return subprocess.run(
        ["rabbitmqctl", *args], check=True, capture_output=True, text=True, timeout=timeout
    ).stdout


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    if not _broker_up():
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672 (scripts/test starts it)")
    vhost = f"cloudcore-test-{os.getpid()}-{secrets.token_hex(3)}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def private_broker() -> Iterator[PrivateBroker]:
    """A RabbitMQ node of this test's own, to stop and start at will; removed afterwards."""
    broker = PrivateBroker()
    try:
        started = time.monotonic()
        broker.start()
        print(f"private RabbitMQ {broker.node} started in {time.monotonic() - started:.1f} s")
        yield broker
    finally:
        broker.remove()


@pytest.fixture
def broker_url(request: pytest.FixtureRequest) -> str:
    """Where this test's nodes connect: its private broker if it asked for one, else the
    session's vhost on the shared broker."""
    if "private_broker" in request.fixturenames:
        broker: PrivateBroker = request.getfixturevalue("private_broker")
        return broker.url
    url: str = request.getfixturevalue("amqp_url")
    return url


class Nodes:
    """Node processes of one test: start, kill -9, restart; all stopped at the end."""

    def __init__(self, url: str, exchange: str, data_dir: Path, queue_type: str) -> None:
        self.queue_type = queue_type
        self.url = url
        self.exchange = exchange
        self.data_dir = data_dir
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.caps: dict[str, dict[str, str]] = {}

    def queue_type_of(self, node: str) -> str:
        """The type RabbitMQ gives the node's command queue (quorum or classic)."""
        vhost = unquote(self.url.rsplit("/", 1)[1])
        rows = rabbitmqctl("list_queues", "-q", "-p", vhost, "name", "type").splitlines()
        types = dict(row.split("\t") for row in rows if "\t" in row)
        return types[f"{self.exchange}.node.{node}"]

    def log(self, node: str) -> str:
        return (self.data_dir / f"{node}.log").read_text()

    async def start(self, node: str, **caps: str) -> None:
        self.caps[node] = caps
        proc = self.procs[node] = self._spawn(node, caps)
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.strip() == "ready", f"node {node} did not start:\n{self.log(node)}"

    def _spawn(self, node: str, caps: dict[str, str]) -> subprocess.Popen[str]:
        with open(self.data_dir / f"{node}.log", "a") as log:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.cluster.node_main",
                    node,
                    self.url,
                    self.exchange,
                    str(self.data_dir),
                    *(f"{k}={v}" for k, v in caps.items()),
                ],
                cwd=ROOT,
                env={**os.environ, "CC_TEST_QUEUE_TYPE": self.queue_type},
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )

    def kill(self, node: str) -> None:
        proc = self.procs.pop(node)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        self._close(proc)

    @staticmethod
    def _close(proc: subprocess.Popen[str]) -> None:
        if proc.stdout is not None:
            proc.stdout.close()

    async def restart(self, node: str) -> None:
        await self.start(node, **self.caps[node])

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            self._close(proc)
        self.procs.clear()


@pytest.fixture(autouse=True)
def _logging() -> None:
    """Log to this test's stderr: an earlier test may have bound structlog to a stream that
    pytest has closed since."""
    configure_logging("info")


@pytest.fixture
def exchange() -> str:
    return f"cc-{secrets.token_hex(4)}"


@pytest.fixture
def queue_type() -> Literal["quorum", "classic"]:
    """The node queues' type; a test parametrizes it to run on classic queues too."""
    return "quorum"


@pytest.fixture
async def nodes(
    broker_url: str, exchange: str, tmp_path: Path, queue_type: Literal["quorum", "classic"]
) -> AsyncIterator[Nodes]:
    group = Nodes(broker_url, exchange, tmp_path, queue_type)
    try:
        yield group
    finally:
        await asyncio.to_thread(group.stop_all)


@pytest.fixture
async def here(
    broker_url: str, exchange: str, tmp_path: Path, queue_type: Literal["quorum", "classic"]
) -> AsyncIterator[ClusterNode]:
    """This pytest process as a cluster node (the embedding API)."""
    node = ClusterNode(
        settings("pytest", broker_url, exchange, str(tmp_path), {"role": "api"}, queue_type),
        kinds={"Counter": Counter},
        registry=registry(),
    )
    async with node:
        yield node
