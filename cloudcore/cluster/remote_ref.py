"""A reference to an actor on another node: the same ``tell``, ``ask``, ``stop`` and watch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from cloudcore.runtime import ActorRef

if TYPE_CHECKING:
    from cloudcore.cluster._remoting import Remoting
    from cloudcore.runtime import ActorCell

__all__ = ["RemoteActorRef"]

M = TypeVar("M", contravariant=True)


class RemoteActorRef(ActorRef[M]):
    """An actor at ``path`` on node ``node``, reached through the cluster transport.

    ``tell`` is persistent: it survives a broker restart and waits in the node's queue while the
    node is down. ``ask`` is transient: its timeout is the message's TTL; it fails at once with
    NodeDown if the node is down and with TransportUnavailable while this node is disconnected.
    Watching works as for local actors; if the node goes down, watchers get ``Terminated`` with
    reason ``node-down`` (``node-left`` after a graceful leave).
    """

    __slots__ = ("_node", "_remoting")

    def __init__(self, remoting: Remoting, node: str, path: str) -> None:
        self._remoting = remoting
        self._node = node
        self.path = path

    @property
    def node(self) -> str:
        return self._node

    def tell(self, message: M) -> None:
        self._remoting.tell(self._node, self.path, message)

    async def ask(self, message: M, timeout: float | None = None) -> Any:
        return await self._remoting.ask(self._node, self.path, message, timeout)

    def stop(self) -> None:
        self._remoting.watches.stop(self)

    async def stopped(self) -> None:
        await self._remoting.watches.wait_stopped(self)

    def _add_watcher(self, watcher: ActorCell) -> None:
        self._remoting.watches.add(self, watcher)

    def _remove_watcher(self, watcher: ActorCell) -> None:
        self._remoting.watches.remove(self, watcher)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, RemoteActorRef)
            and other._node == self._node
            and other.path == self.path
        )

    def __hash__(self) -> int:
        return hash(self.path)
