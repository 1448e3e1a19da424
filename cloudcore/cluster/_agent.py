"""The cluster agent at ``/system/cluster`` on every node: remote watch, spawn, stop and the
actor tree."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, assert_never

from cloudcore.cluster._protocol import (
    AGENT_PATH,
    DescribeTree,
    RemoteTerminated,
    Spawn,
    Spawned,
    StopActor,
    TreeDescribed,
    Unwatch,
    Watch,
)
from cloudcore.errors import NotFound
from cloudcore.runtime import Actor, ActorRef, Terminated

if TYPE_CHECKING:
    from cloudcore.cluster._remoting import Remoting
    from cloudcore.cluster.placement import Placement

__all__ = ["ClusterAgent"]

_AgentMessage = Watch | Unwatch | RemoteTerminated | Spawn | StopActor | DescribeTree | Terminated


class ClusterAgent(Actor[_AgentMessage]):
    """Watches local actors for remote watchers, spawns and stops actors for other nodes, and
    describes this node's actor tree."""

    def __init__(self, remoting: Remoting, placement: Placement) -> None:
        self._remoting = remoting
        self._placement = placement
        self._remote_watchers: dict[str, set[str]] = {}
        self._refs: dict[str, ActorRef[Any]] = {}

    async def receive(self, message: _AgentMessage) -> Any:
        match message:
            case Watch(path=path, watcher_node=node):
                self._watch(path, node)
            case Unwatch(path=path, watcher_node=node):
                watchers = self._remote_watchers.get(path)
                if watchers is not None:
                    watchers.discard(node)
                    if not watchers:
                        del self._remote_watchers[path]
                        self.context.unwatch(self._refs.pop(path))
            case Terminated(actor=ref, reason=reason):
                self._refs.pop(ref.path, None)
                for node in self._remote_watchers.pop(ref.path, ()):
                    self._notify(node, ref.path, reason)
            case RemoteTerminated(node=node, path=path, reason=reason):
                self._remoting.watches.terminated(node, path, reason)
            case Spawn(kind=kind, args=args, kwargs=kwargs, name=name):
                factory = self._placement.factory(kind)
                ref = self.context.system.spawn(factory, *args, name=name, **kwargs)
                return Spawned(ref=ref)
            case StopActor(path=path):
                with contextlib.suppress(NotFound):
                    self.context.system.lookup(path).stop()
            case DescribeTree(path=path):
                return TreeDescribed(node=self._remoting.node, tree=self.context.system.tree(path))
            case _:
                assert_never(message)
        return None

    def _watch(self, path: str, node: str) -> None:
        try:
            ref = self.context.system.lookup(path)
        except NotFound:
            self._notify(node, path, "stopped")
            return
        watchers = self._remote_watchers.setdefault(path, set())
        if not watchers:
            self._refs[path] = ref
            self.context.watch(ref)
        watchers.add(node)

    def _notify(self, node: str, path: str, reason: str) -> None:
        self._remoting.tell(
            node,
            AGENT_PATH,
            RemoteTerminated(node=self._remoting.node, path=path, reason=reason),
        )
