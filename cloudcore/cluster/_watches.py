"""Death watch across nodes, on the watching side.

The first local watcher of a remote actor sends a Watch to the cluster agent of the actor's
node, which watches it locally and answers with RemoteTerminated when it stops. If the node
goes down or leaves first, every local watcher gets ``Terminated`` with that reason.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from cloudcore.cluster._protocol import AGENT_PATH, StopActor, Unwatch, Watch
from cloudcore.runtime import Terminated

if TYPE_CHECKING:
    from cloudcore.cluster._remoting import Remoting
    from cloudcore.cluster.remote_ref import RemoteActorRef
    from cloudcore.runtime import ActorCell

__all__ = ["RemoteWatches"]


class RemoteWatches:
    """Local cells watching remote actors, and tasks waiting for remote actors to stop."""

    def __init__(self, remoting: Remoting) -> None:
        self._remoting = remoting
        # (node, path) -> the ref and the local cells watching it
        self._watches: dict[tuple[str, str], tuple[RemoteActorRef[Any], set[ActorCell]]] = {}
        self._stop_waiters: dict[tuple[str, str], list[asyncio.Future[None]]] = {}

    def add(self, ref: RemoteActorRef[Any], watcher: ActorCell) -> None:
        if self._node_gone(ref.node):
            watcher._enqueue(Terminated(actor=ref, reason="node-down"))
            return
        self._entry(ref)[1].add(watcher)

    def remove(self, ref: RemoteActorRef[Any], watcher: ActorCell) -> None:
        key = (ref.node, ref.path)
        entry = self._watches.get(key)
        if entry is None:
            return
        entry[1].discard(watcher)
        if not entry[1] and key not in self._stop_waiters:
            del self._watches[key]
            remoting = self._remoting
            remoting.tell(ref.node, AGENT_PATH, Unwatch(path=ref.path, watcher_node=remoting.node))

    async def wait_stopped(self, ref: RemoteActorRef[Any]) -> None:
        if self._node_gone(ref.node):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop_waiters.setdefault((ref.node, ref.path), []).append(future)
        self._entry(ref)
        await future

    def stop(self, ref: RemoteActorRef[Any]) -> None:
        self._remoting.tell(ref.node, AGENT_PATH, StopActor(path=ref.path))

    def terminated(self, node: str, path: str, reason: str) -> None:
        """The watched actor ``path`` on ``node`` stopped: tell its watchers."""
        entry = self._watches.pop((node, path), None)
        if entry is not None:
            ref, watchers = entry
            for cell in watchers:
                cell._enqueue(Terminated(actor=ref, reason=reason))
        for future in self._stop_waiters.pop((node, path), ()):
            if not future.done():
                future.set_result(None)

    def node_down(self, node: str, reason: str) -> None:
        for key in [k for k in self._watches if k[0] == node]:
            self.terminated(node, key[1], reason)

    def _entry(self, ref: RemoteActorRef[Any]) -> tuple[RemoteActorRef[Any], set[ActorCell]]:
        key = (ref.node, ref.path)
        entry = self._watches.get(key)
        if entry is None:
            entry = self._watches[key] = (ref, set())
            remoting = self._remoting
            remoting.tell(ref.node, AGENT_PATH, Watch(path=ref.path, watcher_node=remoting.node))
        return entry

    def _node_gone(self, node: str) -> bool:
        membership = self._remoting.membership
        return membership is not None and membership.status(node) in ("down", "left")
