"""``[api] workers = 2`` on a server node: a second process (``server-w1``) serves the same port
(SO_REUSEPORT), operations through either reach the datacenter's node, and stopping the node
stops its worker."""

from __future__ import annotations

import os
from typing import Any

import pytest

from cloudcore.cluster import ClusterNode
from tests.integration.profiles.api import Api
from tests.integration.profiles.conftest import _logging, cluster, here  # noqa: F401 - fixtures
from tests.integration.profiles.launcher import Cluster
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(180)


async def _fresh(base: str, method: str, path: str, body: Any = None) -> Any:
    """One call on a connection of its own (the kernel picks a worker per connection)."""
    api = Api(base)
    try:
        answer = await api.call(method, path, body)
        assert answer.status < 300, answer.body
        return answer.body
    finally:
        await api.close()


async def test_two_workers_serve_one_port_and_stop_with_their_node(
    cluster: Cluster,  # noqa: F811 - the imported fixture
    here: ClusterNode,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUDCORE_API__WORKERS", "2")
    await cluster.start("server")
    monkeypatch.delenv("CLOUDCORE_API__WORKERS")
    await cluster.start("node-dc1")
    await here.wait_for_nodes(["server", "server-w1", "node-dc1"], 60)
    started = await cluster.wait_for_log("server", "api.worker_started", worker="server-w1")

    # Each connection is answered by one of the two ("this node first" in /system/nodes).
    answering = [
        (await _fresh(cluster.api, "GET", "/system/nodes"))["items"][0]["id"] for _ in range(24)
    ]
    assert set(answering) == {"server", "server-w1"}, answering

    # Deploys and operations through either worker reach dc1's node.
    for i in range(4):
        task = await _fresh(
            cluster.api,
            "POST",
            "/vms",
            {
                "name": f"w{i}",
                "datacenter_id": "dc1",
                "cpus": 1,
                "memory_mib": 128,
                "tenant_id": "demo",
            },
        )
        api = Api(cluster.api)
        try:
            done = await api.finished(task["id"])
            assert done["state"] == "SUCCEEDED", done
            vm_id = done["subject"].removeprefix("vm/")
            stop = await _fresh(cluster.api, "POST", f"/vms/{vm_id}/stop", {"hard": True})
            assert (await api.finished(stop["id"]))["state"] == "SUCCEEDED"
        finally:
            await api.close()

    assert cluster.stop("server") == 0
    pid = int(str(started["pid"]))

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    await eventually(gone, timeout=30)
