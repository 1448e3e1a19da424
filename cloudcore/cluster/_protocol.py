"""The cluster's own messages between nodes (membership, remote watch, remote spawn).

Their wire tags are namespaced (``cloudcore.Spawn``), so application messages of the same class
name do not clash with them.
"""

from __future__ import annotations

from typing import Any

from cloudcore.runtime import ActorRef, Message
from cloudcore.runtime.introspection import ActorInfo

__all__ = [
    "AGENT_PATH",
    "Heartbeat",
    "RemoteTerminated",
    "Spawn",
    "Spawned",
    "StopActor",
    "Unwatch",
    "Watch",
]

#: Where each node's cluster agent lives.
AGENT_PATH = "/system/cluster"


class Heartbeat(Message, frozen=True, kw_only=True, tag="cloudcore.Heartbeat"):
    """Broadcast every heartbeat interval; the first one is the join, ``leaving`` the leave."""

    node: str
    incarnation: int
    capabilities: dict[str, str]
    kinds: list[str]
    started_at: float
    leaving: bool = False
    #: What the node says of itself now (its profile, datacenters, load), for the console.
    info: dict[str, str] = {}


class Watch(Message, frozen=True, kw_only=True, tag="cloudcore.Watch"):
    """``watcher_node`` wants a RemoteTerminated when the actor at ``path`` stops."""

    path: str
    watcher_node: str


class Unwatch(Message, frozen=True, kw_only=True, tag="cloudcore.Unwatch"):
    path: str
    watcher_node: str


class RemoteTerminated(Message, frozen=True, kw_only=True, tag="cloudcore.RemoteTerminated"):
    """The actor at ``path`` on ``node`` stopped, for ``reason``."""

    node: str
    path: str
    reason: str


class StopActor(Message, frozen=True, kw_only=True, tag="cloudcore.StopActor"):
    path: str


class DescribeTree(Message, frozen=True, kw_only=True, tag="cloudcore.DescribeTree"):
    """The actor tree of the receiving node under ``path``; answered with TreeDescribed
    (NotFound if no actor lives there)."""

    path: str = "/"


class TreeDescribed(Message, frozen=True, kw_only=True, tag="cloudcore.TreeDescribed"):
    node: str
    tree: ActorInfo


class Spawn(Message, frozen=True, kw_only=True, tag="cloudcore.Spawn"):
    """Create an actor of the registered ``kind``; answered with Spawned."""

    kind: str
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    name: str | None = None


class Spawned(Message, frozen=True, kw_only=True, tag="cloudcore.Spawned"):
    ref: ActorRef[Any]
