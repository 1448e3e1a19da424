"""A cloudcore cluster: nodes joined through a transport, with location-transparent actors.

A ref to an actor on another node (:class:`RemoteActorRef`) has the same ``tell``, ``ask``,
``stop`` and death watch as a local one, and refs travel inside messages. Nodes announce
themselves with heartbeats (:class:`Member` is one row of the view); a node silent past
``cluster.node_timeout`` is down, and watchers of its actors get ``Terminated(reason=
"node-down")``. Actors are spawned remotely by kind, on a node whose capabilities satisfy the
requirements. Start here: :class:`ClusterNode`.
"""

from cloudcore.cluster.dedup import DedupWindow
from cloudcore.cluster.membership import Member
from cloudcore.cluster.node import ClusterNode
from cloudcore.cluster.placement import satisfies
from cloudcore.cluster.registry import MessageRegistry
from cloudcore.cluster.remote_ref import RemoteActorRef
from cloudcore.cluster.wire import WIRE_VERSION

__all__ = [
    "WIRE_VERSION",
    "ClusterNode",
    "DedupWindow",
    "Member",
    "MessageRegistry",
    "RemoteActorRef",
    "satisfies",
]
