"""Three node processes and this one: remote tell and ask, spawn by capability, refs inside
messages, and the cluster view — over the real broker."""

from __future__ import annotations

import asyncio

import pytest

from cloudcore.cluster import ClusterNode, RemoteActorRef
from cloudcore.errors import NoNodeMatches
from tests.integration.cluster.actors import (
    Add,
    AskOther,
    Counter,
    Members,
    TellBack,
    Total,
    WhereAmI,
)
from tests.integration.cluster.conftest import Nodes
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(90)


async def start_three(nodes: Nodes, here: ClusterNode) -> None:
    await asyncio.gather(
        nodes.start("n1", datacenter="dc1", hypervisor="kvm"),
        nodes.start("n2", datacenter="dc2", hypervisor="kvm"),
        nodes.start("n3", datacenter="dc1", hypervisor="xen"),
    )
    await here.wait_for_nodes(["n1", "n2", "n3", "pytest"], 10)


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_three_nodes_tell_ask_spawn_and_pass_refs(
    nodes: Nodes, here: ClusterNode, queue_type: str
) -> None:
    await start_three(nodes, here)

    # remote tell and ask, in order from one sender
    counter = here.ref("n2", "/user/counter")
    assert isinstance(counter, RemoteActorRef)
    for _ in range(500):
        counter.tell(Add(n=2))
    assert await counter.ask(Total(), timeout=5) == 1000

    # spawn by capability
    xen = await here.spawn_remote("Counter", 7, requirements={"hypervisor": "xen"}, name="x")
    assert await xen.ask(WhereAmI(), timeout=5) == "n3"
    dc1 = {
        await (await here.spawn_remote("Counter", requirements={"datacenter": "dc1"})).ask(
            WhereAmI(), timeout=5
        )
        for _ in range(4)
    }
    assert dc1 == {"n1", "n3"}  # both dc1 nodes take turns, never n2
    with pytest.raises(NoNodeMatches, match="dc9"):
        await here.spawn_remote("Counter", requirements={"datacenter": "dc9"})

    # refs inside messages: n1 asks n3's actor through a ref it got from us ...
    assert await here.ref("n1", "/user/counter").ask(AskOther(other=xen), timeout=5) == 7
    # ... and n2 tells an actor of ours through a ref in the message
    mine = here.spawn(Counter, name="mine")
    counter.tell(TellBack(to=mine, n=5))
    await eventually(lambda: mine.ask(Total(), timeout=1), timeout=5)
    assert await mine.ask(Total(), timeout=1) == 5

    # the cluster view, as this node and as a remote node see it
    view = {m.node: m for m in here.members()}
    assert {n: m.status for n, m in view.items()} == {
        "n1": "up",
        "n2": "up",
        "n3": "up",
        "pytest": "up",
    }
    assert view["n3"].capabilities == {"datacenter": "dc1", "hypervisor": "xen"}
    assert view["n1"].last_heartbeat > 0
    remote_view = await here.ref("n2", "/user/probe").ask(Members(), timeout=5)
    assert remote_view == {"n1": "up", "n2": "up", "n3": "up", "pytest": "up"}
    assert await asyncio.to_thread(nodes.queue_type_of, "n1") == queue_type
