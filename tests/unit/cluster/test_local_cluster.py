"""The cluster over the in-process transport: remote tell and ask, refs inside messages,
placement by capability, remote death watch and node-down — no broker needed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cloudcore.cluster import ClusterNode, MessageRegistry, RemoteActorRef
from cloudcore.config import ClusterSettings, NodeSettings, Settings
from cloudcore.errors import NodeDown, NoNodeMatches, RemoteError
from cloudcore.runtime import Actor, ActorRef, Message, Terminated
from cloudcore.transport import LocalHub, LocalTransport


class Add(Message, frozen=True, kw_only=True):
    n: int


class Total(Message, frozen=True, kw_only=True):
    pass


class ForwardTotal(Message, frozen=True, kw_only=True):
    """Ask ``to`` for its total and return it: a ref travelling inside a message."""

    to: ActorRef


class Boom(Message, frozen=True, kw_only=True):
    pass


class Counter(Actor[Add | Total | ForwardTotal | Boom]):
    def __init__(self, start: int = 0) -> None:
        self.total = start

    async def receive(self, message: Add | Total | ForwardTotal | Boom) -> Any:
        match message:
            case Add(n=n):
                self.total += n
            case Total():
                return self.total
            case ForwardTotal(to=to):
                return await to.ask(Total(), timeout=2)
            case Boom():
                raise ValueError("boom")
        return None


class Watcher(Actor[Terminated]):
    def __init__(self, target: ActorRef, seen: asyncio.Queue[Terminated]) -> None:
        self.seen = seen
        self.context.watch(target)

    async def receive(self, message: Terminated) -> None:
        self.seen.put_nowait(message)


def settings(node: str, **caps: str) -> Settings:
    return Settings(
        node=NodeSettings(id=node, capabilities=caps),
        cluster=ClusterSettings(heartbeat_interval=0.05, node_timeout=0.3),
    )


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[LocalHub, ClusterNode, ClusterNode]]:
    hub = LocalHub()
    kinds = {"Counter": Counter}
    registry = MessageRegistry()
    for cls in (Add, Total, ForwardTotal, Boom):  # over same-named messages of other tests
        registry.register(cls)
    a = ClusterNode(
        settings("a", role="api"), kinds=kinds, transport=LocalTransport(hub), registry=registry
    )
    b = ClusterNode(
        settings("b", datacenter="dc1", hypervisor="kvm"),
        kinds=kinds,
        transport=LocalTransport(hub),
        registry=registry,
    )
    await a.start()
    await b.start()
    await a.wait_for_nodes(["a", "b"], 2)
    yield hub, a, b
    await b.stop()
    await a.stop()


async def test_tell_then_ask_reach_a_remote_actor_in_order(
    cluster: tuple[LocalHub, ClusterNode, ClusterNode],
) -> None:
    _, a, b = cluster
    b.spawn(Counter, name="c")
    ref = a.ref("b", "/user/c")
    assert isinstance(ref, RemoteActorRef)
    for _ in range(100):
        ref.tell(Add(n=1))
    assert await ref.ask(Total(), timeout=2) == 100


async def test_spawn_by_capability_and_refs_inside_messages(
    cluster: tuple[LocalHub, ClusterNode, ClusterNode],
) -> None:
    _, a, _ = cluster
    remote = await a.spawn_remote("Counter", 5, requirements={"datacenter": "dc1"}, name="r")
    assert remote.node == "b"
    local = a.spawn(Counter, 42, name="l")
    # b asks a's actor through the ref it received inside the message
    assert await remote.ask(ForwardTotal(to=local), timeout=2) == 42
    assert await remote.ask(Total(), timeout=2) == 5


async def test_no_node_matching_the_requirements_is_a_clear_error(
    cluster: tuple[LocalHub, ClusterNode, ClusterNode],
) -> None:
    _, a, _ = cluster
    with pytest.raises(NoNodeMatches, match="datacenter"):
        await a.spawn_remote("Counter", requirements={"datacenter": "dc9"})
    with pytest.raises(NoNodeMatches, match="Nope"):
        await a.spawn_remote("Nope")


async def test_a_remote_exception_comes_back_to_the_asker(
    cluster: tuple[LocalHub, ClusterNode, ClusterNode],
) -> None:
    _, a, b = cluster
    b.spawn(Counter, name="c")
    with pytest.raises(ValueError, match="boom") as raised:
        await a.ref("b", "/user/c").ask(Boom(), timeout=2)
    # rebuilt as the type the actor raised, not a RemoteError (or a subclass) standing in for it
    assert type(raised.value) is ValueError
    assert not isinstance(raised.value, RemoteError)
    with pytest.raises(LookupError):
        await a.ref("b", "/user/missing").ask(Total(), timeout=2)


async def test_remote_watch_sees_a_stop(cluster: tuple[LocalHub, ClusterNode, ClusterNode]) -> None:
    _, a, b = cluster
    b.spawn(Counter, name="c")
    ref = a.ref("b", "/user/c")
    seen: asyncio.Queue[Terminated] = asyncio.Queue()
    a.spawn(Watcher, ref, seen)  # its constructor sends the Watch to b's cluster agent
    ref.stop()  # the StopActor goes to the same agent after it, in order: no wait needed
    terminated = await asyncio.wait_for(seen.get(), 2)
    assert terminated.actor == ref and terminated.reason == "stopped"


async def test_a_silent_node_is_declared_down_and_its_watchers_told(
    cluster: tuple[LocalHub, ClusterNode, ClusterNode],
) -> None:
    hub, a, b = cluster
    b.spawn(Counter, name="c")
    ref = a.ref("b", "/user/c")
    seen: asyncio.Queue[Terminated] = asyncio.Queue()
    a.spawn(Watcher, ref, seen)  # a's watch is registered when this returns: no wait needed
    # "crash" b: no more heartbeats, no leave message
    assert b._membership is not None and b._membership._timer is not None
    b._membership._timer.cancel()
    hub._detach("b")
    terminated = await asyncio.wait_for(seen.get(), 2)
    assert terminated.reason == "node-down"
    assert {m.node: m.status for m in a.members()}["b"] == "down"
    with pytest.raises(NodeDown):
        await ref.ask(Total(), timeout=1)
    hub._attach("b", b._remoting)  # type: ignore[arg-type]  # so the fixture can stop it


async def test_the_cluster_view_lists_capabilities_and_status(
    cluster: tuple[LocalHub, ClusterNode, ClusterNode],
) -> None:
    _, a, _ = cluster
    view = {m.node: m for m in a.members()}
    assert view["b"].status == "up"
    assert view["b"].capabilities == {"datacenter": "dc1", "hypervisor": "kvm"}
    assert view["b"].kinds == ["Counter"]
    assert view["a"].capabilities == {"role": "api"}


class HoldingHub(LocalHub):
    """A hub that can hold back command batches, as a slow durable queue would."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = False
        self.held: list[tuple[str, list[Any]]] = []

    def _commands(self, node: str, items: list[Any]) -> None:
        if self.holding:
            self.held.append((node, items))
        else:
            super()._commands(node, items)

    def release(self) -> None:
        self.holding = False
        for node, items in self.held:
            super()._commands(node, items)
        self.held.clear()


@pytest.fixture
async def held() -> AsyncIterator[tuple[HoldingHub, ClusterNode, ClusterNode]]:
    hub = HoldingHub()
    registry = MessageRegistry()
    for cls in (Add, Total):
        registry.register(cls)
    a = ClusterNode(settings("a"), transport=LocalTransport(hub), registry=registry)
    b = ClusterNode(settings("b"), transport=LocalTransport(hub), registry=registry)
    await a.start()
    await b.start()
    await a.wait_for_nodes(["b"], 2)
    b.spawn(Counter, name="c")
    yield hub, a, b
    hub.release()
    await b.stop()
    await a.stop()


async def test_an_ask_waits_for_the_tell_its_sender_sent_before_it(
    held: tuple[HoldingHub, ClusterNode, ClusterNode],
) -> None:
    hub, a, _ = held
    ref = a.ref("b", "/user/c")
    hub.holding = True
    ref.tell(Add(n=1))  # held back, like a tell stuck behind a backlog
    asking = asyncio.ensure_future(ref.ask(Total(), timeout=5))
    # What must not come within 0.1 s: an answer (it would skip the tell); the ask stays parked.
    done, _ = await asyncio.wait([asking], timeout=0.1)
    assert not done
    hub.release()
    assert await asking == 1


async def test_an_ask_whose_earlier_tell_never_comes_is_answered_after_a_bounded_wait(
    held: tuple[HoldingHub, ClusterNode, ClusterNode],
) -> None:
    hub, a, _ = held
    ref = a.ref("b", "/user/c")
    hub.holding = True
    ref.tell(Add(n=1))  # as if dead-lettered: it never reaches b
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await ref.ask(Total(), timeout=5) == 0
    assert 0.9 <= loop.time() - started < 2.0
    hub.held.clear()
