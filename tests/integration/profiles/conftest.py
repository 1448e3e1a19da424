"""A cluster of `cloudcore serve` processes per test (see launcher.py), and this pytest process
joined to it to look at the nodes' actors."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudcore.cluster import ClusterNode
from cloudcore.config import ClusterSettings, NodeSettings, Settings, TransportSettings
from cloudcore.logging import configure_logging
from tests.integration.profiles.launcher import Cluster


def _broker_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _logging() -> None:
    configure_logging("info")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    if not _broker_up():
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672 (scripts/test starts it)")
    group = Cluster(tmp_path)
    try:
        await group.create()
        yield group
    finally:
        await group.remove()


@pytest.fixture
async def here(cluster: Cluster, tmp_path: Path) -> AsyncIterator[ClusterNode]:
    """This process as a node of the cluster (no datacenter, no API): to ask nodes for their
    actor trees."""
    settings = Settings(
        node=NodeSettings(id="pytest", data_dir=str(tmp_path / "pytest")),
        transport=TransportSettings(
            kind="amqp", amqp_url=cluster.amqp_url, exchange=cluster.tag, reconnect_max_delay=1.0
        ),
        cluster=ClusterSettings(heartbeat_interval=0.25, node_timeout=1.5),
    )
    async with ClusterNode(settings) as node:
        yield node
