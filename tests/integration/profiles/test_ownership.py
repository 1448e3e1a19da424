"""Two remote-services nodes for one datacenter, as `cloudcore serve` processes: exactly one
runs it; the one cut from RabbitMQ stops driving it before the other takes over (never two
owners); the other, killed, hands it back after its lease."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cloudcore.cluster import ClusterNode
from cloudcore.store.postgres import PostgresStore
from tests.integration.profiles.api import Api
from tests.integration.profiles.launcher import Cluster
from tests.integration.profiles.proxy import BrokerProxy
from tests.waiting import eventually, never

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def proxy() -> AsyncIterator[BrokerProxy]:
    broker = BrokerProxy()
    await broker.start()
    try:
        yield broker
    finally:
        await broker.close()


async def runs_dc1(here: ClusterNode, node: str) -> bool:
    return any(info.path == "/user/dc/dc1" for info in (await here.tree(node, "/user")).walk())


async def test_one_owner_fenced_when_cut_from_the_broker_and_taken_over_after_its_lease(
    cluster: Cluster, here: ClusterNode, proxy: BrokerProxy
) -> None:
    cluster.datacenters = ("dc1",)
    await cluster.start("server")
    await cluster.start("node-a", datacenter="dc1", amqp_url=proxy.url(cluster.amqp_url))
    await cluster.wait_for_log("node-a", "lease.acquired", datacenter="dc1")
    await cluster.start("node-b", datacenter="dc1")
    await here.wait_for_nodes(["server", "node-a", "node-b"], 20)
    store = await PostgresStore.connect(cluster.dsn, pool_size=1)
    api = Api(cluster.api)
    try:
        # Two nodes for dc1: exactly one runs it, the lease's holder.
        assert await runs_dc1(here, "node-a") and not await runs_dc1(here, "node-b")
        (first,) = await store.list_leases("datacenter/dc1")
        assert first.node == "node-a"
        deployed = await api.deploy("dc1", "vm-a")
        assert (await api.finished(deployed.body["id"]))["state"] == "SUCCEEDED"

        # node-a loses the broker with deploys in flight: it stops driving dc1 (fenced) before
        # its lease expires, and node-b takes dc1 only after that.
        in_flight = [(await api.deploy("dc1", f"flight-{i}")) for i in range(6)]
        assert all(answer.status == 202 for answer in in_flight)
        b_offset = cluster.log_size("node-b")
        proxy.cut()
        fenced = await cluster.wait_for_log("node-a", "lease.fenced", datacenter="dc1", timeout=20)
        taken = await cluster.wait_for_log(
            "node-b", "lease.acquired", b_offset, timeout=20, datacenter="dc1"
        )
        assert str(fenced["timestamp"]) < str(taken["timestamp"])
        (second,) = await store.list_leases("datacenter/dc1")
        assert (second.node, second.token) == ("node-b", first.token + 1)
        await eventually(lambda: runs_dc1(here, "node-b"), timeout=5)
        # Every deploy accepted before the cut ends (node-b's watchdog resumes or settles what
        # node-a left RUNNING, its poll takes what was PENDING): none lost, none stuck.
        for answer in in_flight:
            task = await api.finished(answer.body["id"], timeout=60)
            assert task["state"] in {"SUCCEEDED", "FAILED"}, task
        later = await api.deploy("dc1", "vm-b")  # routed to the new owner
        assert (await api.finished(later.body["id"]))["state"] == "SUCCEEDED"

        # Back on the broker, node-a does not take dc1 again while node-b holds it.
        a_offset = cluster.log_size("node-a")
        proxy.heal()
        await eventually(lambda: _up(api, "node-a"), timeout=20)
        await never(lambda: _acquired(cluster, "node-a", a_offset), within=cluster.lease)
        assert not await runs_dc1(here, "node-a")

        # node-b killed: node-a takes over once node-b's lease has expired.
        cluster.kill("node-b")
        await cluster.wait_for_log("node-a", "lease.acquired", a_offset, datacenter="dc1")
        await eventually(lambda: runs_dc1(here, "node-a"), timeout=5)
        (third,) = await store.list_leases("datacenter/dc1")
        assert (third.node, third.token) == ("node-a", second.token + 1)
    finally:
        await api.close()
        await store.close()


async def _up(api: Api, node: str) -> bool:
    return await api.node_status(node) == "up"


def _acquired(cluster: Cluster, node: str, offset: int) -> bool:
    return any(r.get("event") == "lease.acquired" for r in cluster.records(node, offset))
