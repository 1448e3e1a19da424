"""The scheduler: picks a host for each VM of a datacenter.

Filters (:mod:`~actors.scheduler.filters`: datacenter, admin state, health, capacity with
overcommit, affinity, anti-affinity) drop the hosts that cannot take a VM; a weigher
(:mod:`~actors.scheduler.weighers`: pack or spread) orders the rest. The decision is made in
memory by :class:`SchedulerEngine`; :class:`SchedulerActor` feeds it from the store and claims the
chosen host through the store's atomic ``place_vm``, so concurrent placements, even by several
schedulers, cannot overbook a host. Overcommit is applied once, when a host registers
(:func:`allocatable`); affinity groups are described in :mod:`~actors.scheduler.affinity`.
"""

from actors.scheduler.actor import SchedulerActor, resume_on_conflict
from actors.scheduler.affinity import AFFINITY_KEY, Policy, group_key, policy_of
from actors.scheduler.engine import Explanation, SchedulerEngine
from actors.scheduler.hostview import HostView
from actors.scheduler.messages import (
    Explain,
    HostRemoved,
    HostUpdated,
    PlaceVM,
    ReleaseVM,
    ReservationEnded,
    ReserveHost,
    SchedulerMessage,
)
from actors.scheduler.overcommit import PHYSICAL_CPUS, PHYSICAL_MEMORY_MIB, allocatable
from actors.scheduler.request import PlacementRequest
from actors.scheduler.weighers import Weigher

__all__ = [
    "AFFINITY_KEY",
    "PHYSICAL_CPUS",
    "PHYSICAL_MEMORY_MIB",
    "Explain",
    "Explanation",
    "HostRemoved",
    "HostUpdated",
    "HostView",
    "PlaceVM",
    "PlacementRequest",
    "Policy",
    "ReleaseVM",
    "ReservationEnded",
    "ReserveHost",
    "SchedulerActor",
    "SchedulerEngine",
    "SchedulerMessage",
    "Weigher",
    "allocatable",
    "group_key",
    "policy_of",
    "resume_on_conflict",
]
