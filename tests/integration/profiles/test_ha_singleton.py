"""HA is a singleton across nodes: two remote-services nodes for dc1 (``cloudcore serve``
processes on a PostgreSQL database of their own), and only the holder of dc1's lease runs its
HA actor and fences its failed hosts; killed -9, the other takes the lease and HA with it.

A failed host here is one whose hypervisor never answers (a libvirt socket that does not
exist); its fence command writes which node fenced it, so the file tells who ran HA."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.registration import host_record
from cloudcore.cluster import ClusterNode
from cloudcore.config import Settings
from cloudcore.store.postgres import PostgresStore
from tests.integration.profiles.launcher import Cluster
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(180)


async def runs_ha(here: ClusterNode, node: str) -> bool:
    tree = await here.tree(node, "/user")
    return any(info.path == "/user/dc/dc1/ha" for info in tree.walk())


async def _dead_host(store: PostgresStore, host_id: str, fenced: Path, tmp_path: Path) -> None:
    """A host of dc1 that never answers; fencing it appends ``<node> <host>`` to ``fenced``."""
    host = host_record(
        Settings(),
        host_id=host_id,
        datacenter_id="dc1",
        hypervisor="libvirt",
        uri=f"qemu+unix:///system?socket={tmp_path}/{host_id}-no-such.sock",
        physical_cpus=4,
        physical_memory_mib=4096,
    )
    host.capabilities["fence.command"] = (
        f'echo "$CLOUDCORE_NODE__ID $CLOUDCORE_HOST_ID" >> {fenced}'
    )
    await store.create(host)


def _fences(fenced: Path) -> list[str]:
    return fenced.read_text().splitlines() if fenced.exists() else []


async def test_only_the_lease_holder_runs_ha_and_a_killed_holder_hands_it_over(
    cluster: Cluster, here: ClusterNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDCORE_ORCHESTRATOR__HA_GRACE", "1.0")  # the nodes inherit it
    monkeypatch.setenv("CLOUDCORE_ORCHESTRATOR__HA_CHECK_INTERVAL", "0.5")
    fenced = tmp_path / "fenced"
    cluster.datacenters = ("dc1",)
    await cluster.start("server")
    store = await PostgresStore.connect(cluster.dsn, pool_size=1)
    try:
        await _dead_host(store, "dead-1", fenced, tmp_path)
        await cluster.start("node-a", datacenter="dc1")
        await cluster.wait_for_log("node-a", "lease.acquired", datacenter="dc1")
        await cluster.start("node-b", datacenter="dc1")
        await here.wait_for_nodes(["server", "node-a", "node-b"], 20)

        # Exactly one node runs dc1's HA: the lease holder fences the dead host, once.
        await eventually(lambda: _fences(fenced), timeout=30, interval=0.2)
        assert await runs_ha(here, "node-a") and not await runs_ha(here, "node-b")
        assert not await runs_ha(here, "server")
        assert _fences(fenced) == ["node-a dead-1"]

        # The holder killed -9: the other node takes the lease and runs HA; a host failing
        # now is fenced by it.
        b_offset = cluster.log_size("node-b")
        cluster.kill("node-a")
        await _dead_host(store, "dead-2", fenced, tmp_path)
        await cluster.wait_for_log("node-b", "lease.acquired", b_offset, datacenter="dc1")
        await eventually(lambda: runs_ha(here, "node-b"), timeout=10)

        def fenced_by_b() -> bool:
            return "node-b dead-2" in _fences(fenced)

        await eventually(fenced_by_b, timeout=30, interval=0.2)
        # dead-1 stays FENCED under its new owner (not fenced again); each host fenced once.
        assert _fences(fenced) == ["node-a dead-1", "node-b dead-2"]
        (lease,) = await store.list_leases("datacenter/dc1")
        assert lease.node == "node-b"
    finally:
        await store.close()
