"""ClusterNode: a cloudcore node joined to the others — the embedding API.

::

    async with ClusterNode(settings, kinds={"Counter": Counter}) as node:
        local = node.spawn(Counter, name="counter")               # a local actor
        remote = await node.spawn_remote("Counter", requirements={"datacenter": "dc1"})
        await remote.ask(Increment(by=1))                          # same API as a local ref
        print(node.members())                                      # the cluster view

Start it inside a running event loop (an aiohttp app's startup hook, for example); it runs in
that loop and needs no thread of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from cloudcore.cluster._agent import ClusterAgent
from cloudcore.cluster._protocol import (
    AGENT_PATH,
    DescribeTree,
    Heartbeat,
    Spawn,
    Spawned,
    TreeDescribed,
)
from cloudcore.cluster._remoting import Remoting
from cloudcore.cluster.dedup import DedupWindow
from cloudcore.cluster.membership import Member, Membership
from cloudcore.cluster.placement import Placement
from cloudcore.cluster.registry import MessageRegistry
from cloudcore.cluster.remote_ref import RemoteActorRef
from cloudcore.config import Settings
from cloudcore.errors import ActorError, AskTimeout
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, ActorSystem, SupervisorStrategy
from cloudcore.runtime.cell import ActorFactory
from cloudcore.runtime.introspection import ActorInfo
from cloudcore.runtime.mailbox import Mailbox
from cloudcore.transport import Transport, create_transport

__all__ = ["ClusterNode"]

C = TypeVar("C")

_log = get_logger("cloudcore.cluster")


class ClusterNode:
    """One node of a cloudcore cluster: an ActorSystem plus membership, remote refs and
    placement over the configured transport.

    ``settings`` gives the node id and capabilities (``[node]``), the runtime, the transport
    (``[transport]``) and the heartbeat timing (``[cluster]``). ``kinds`` are the actor
    factories other nodes may spawn here by name. ``transport`` overrides the one the settings
    name (tests, embedding several nodes in one process with a LocalHub).

    ``setup(node)`` (plain or async) runs once the actor system exists and before the node
    takes anything from its queue: spawn the actors that commands are addressed to there, so
    that commands waiting in the queue from before a restart find them. A command for an
    actor that does not exist is dead-lettered to the broker's dead-letter queue.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        kinds: Mapping[str, ActorFactory] | None = None,
        transport: Transport | None = None,
        registry: MessageRegistry | None = None,
        setup: Callable[[ClusterNode], Awaitable[None] | None] | None = None,
        user_strategy: SupervisorStrategy | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self._user_strategy = user_strategy  # of the top-level actors (ActorSystem's)
        self.node_id = self.settings.node.id
        self.capabilities = dict(self.settings.node.capabilities)
        self.placement = Placement(kinds)
        self.registry = registry or MessageRegistry()
        self._transport = transport or create_transport(self.settings.transport)
        self._system: ActorSystem | None = None
        self._remoting: Remoting | None = None
        self._membership: Membership | None = None
        self._setup = setup
        self._started = False
        #: What this node says of itself in each heartbeat (``Member.info`` elsewhere): set
        #: by the application, called once per heartbeat, so keep it cheap.
        self.info: Callable[[], Mapping[str, str]] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the actor system, connect the transport and join the cluster.

        Raises TransportUnavailable if the broker cannot be reached.
        """
        if self._started:
            return
        settings = self.settings
        system = self._system = ActorSystem(
            self.node_id, settings.runtime, user_strategy=self._user_strategy
        )
        journal = None
        if settings.transport.kind == "amqp" and settings.transport.dedup_journal:
            journal = Path(settings.node.data_dir) / "cluster" / f"{self.node_id}.handled"
        dedup = DedupWindow(settings.transport.dedup_window, journal)
        remoting = self._remoting = Remoting(system, self._transport, self.registry, dedup)
        system.spawn_system(ClusterAgent, remoting, self.placement, name=AGENT_PATH.rsplit("/")[-1])
        cluster = settings.cluster
        membership = self._membership = Membership(
            self._heartbeat(),
            interval=cluster.heartbeat_interval,
            timeout=cluster.node_timeout,
            send=lambda beat: remoting.broadcast_heartbeat(
                self._described(beat), cluster.node_timeout
            ),
            on_down=remoting.node_down,
        )
        remoting.membership = membership
        try:
            if self._setup is not None:
                pending = self._setup(self)
                if pending is not None:
                    await pending
            await self._transport.start(self.node_id, remoting)
        except BaseException:
            await system.shutdown()
            dedup.close()
            raise
        membership.start()
        self._started = True
        _log.info("cluster.node_started", node=self.node_id, capabilities=self.capabilities)

    async def stop(self) -> None:
        """Leave the cluster, stop every actor (each finishes what is in its mailbox), and
        disconnect. Commands not yet taken stay in this node's queue for its next start."""
        if not self._started:
            return
        self._started = False
        assert self._system and self._remoting and self._membership
        self._membership.stop()
        self._remoting.closing = True
        await self._system.shutdown()
        await self._transport.close()
        self._remoting.dedup.close()
        _log.info("cluster.node_stopped", node=self.node_id)

    async def __aenter__(self) -> ClusterNode:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ actors

    @property
    def system(self) -> ActorSystem:
        """This node's actor system (started)."""
        if self._system is None:
            raise ActorError(f"cluster node {self.node_id} is not started")
        return self._system

    def spawn(
        self,
        factory: Callable[..., Actor[C]],
        /,
        *args: Any,
        name: str | None = None,
        mailbox: Mailbox | None = None,
        **kwargs: Any,
    ) -> ActorRef[C]:
        """Spawn a top-level actor on this node; see ActorSystem.spawn."""
        return self.system.spawn(factory, *args, name=name, mailbox=mailbox, **kwargs)

    def register(self, kind: str, factory: ActorFactory) -> None:
        """Let other nodes spawn ``factory`` on this node under the name ``kind``."""
        self.placement.register(kind, factory)
        if self._membership is not None:
            self._membership._me = self._heartbeat()

    async def spawn_remote(
        self,
        kind: str,
        *args: Any,
        requirements: Mapping[str, str] | None = None,
        name: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> ActorRef[Any]:
        """Create an actor of the registered ``kind`` on an up node whose capabilities satisfy
        ``requirements`` (every key with that value), and return its ref.

        ``args`` and ``kwargs`` travel as msgpack (plain data, messages, refs). Raises
        NoNodeMatches (a NotFound) if no node qualifies, ActorNameTaken if ``name`` is taken
        there, and what an ask raises (AskTimeout, NodeDown, TransportUnavailable).
        """
        assert self._membership is not None
        node = self.placement.choose(self._membership.view(), kind, requirements or {})
        agent = self.ref(node, AGENT_PATH)
        reply = await agent.ask(
            Spawn(kind=kind, args=list(args), kwargs=dict(kwargs), name=name), timeout
        )
        assert isinstance(reply, Spawned)
        return reply.ref

    async def tree(self, node: str, path: str = "/", timeout: float | None = None) -> ActorInfo:
        """The actor tree of ``node`` (this one or another) under ``path``. Raises NotFound if
        no actor lives there, and what an ask raises (AskTimeout, NodeDown)."""
        if node == self.node_id:
            return self.system.tree(path)
        reply = await self.ref(node, AGENT_PATH).ask(DescribeTree(path=path), timeout)
        assert isinstance(reply, TreeDescribed)
        return reply.tree

    def ref(self, node: str, path: str) -> ActorRef[Any]:
        """A ref to the actor at ``path`` on ``node`` (no check that it exists)."""
        if self._remoting is None:
            raise ActorError(f"cluster node {self.node_id} is not started")
        if node == self.node_id:
            return self._remoting.resolve_ref(node, path)
        return RemoteActorRef(self._remoting, node, path)

    # ------------------------------------------------------------------ the cluster view

    @property
    def connected(self) -> bool:
        """Whether the transport is connected now (False while it reconnects)."""
        return self._started and self._transport.connected

    def members(self) -> list[Member]:
        """Every node heard of (this one included): status, capabilities, kinds, last
        heartbeat. Encodes to JSON with msgspec for the console."""
        return self._membership.view() if self._membership else []

    async def wait_for_nodes(self, nodes: Iterable[str], timeout: float = 10.0) -> None:
        """Wait until every node in ``nodes`` is up; AskTimeout after ``timeout`` seconds."""
        wanted = set(nodes)
        membership = self._membership
        assert membership is not None
        deadline = time.monotonic() + timeout
        while True:
            changed = membership.next_change()
            if wanted <= {m.node for m in membership.up()}:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                missing = wanted - {m.node for m in membership.up()}
                raise AskTimeout(f"nodes {sorted(missing)} not up within {timeout:g} s")
            try:
                await asyncio.wait_for(changed.wait(), left)
            except TimeoutError:
                continue

    def _described(self, beat: Heartbeat) -> Heartbeat:
        if self.info is None or beat.leaving:
            return beat
        try:
            info = {str(k): str(v) for k, v in self.info().items()}
        except Exception as exc:  # a bug in the provider must not stop the heartbeats
            _log.warning("cluster.info_failed", error=repr(exc))
            return beat
        return msgspec.structs.replace(beat, info=info)

    def _heartbeat(self) -> Heartbeat:
        remoting = self._remoting
        return Heartbeat(
            node=self.node_id,
            incarnation=remoting.incarnation if remoting else 0,
            capabilities=self.capabilities,
            kinds=self.placement.kinds,
            started_at=time.time(),
        )
