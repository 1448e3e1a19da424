"""The scheduler's filters: each says whether one host may take one request.

A filter is a plain function ``(host, request, group_hosts) -> bool`` (True: the host passes).
``group_hosts`` maps the ids of the hosts that already run VMs of the request's affinity group to
how many; it is empty when the request has no group. :data:`FILTERS` lists them in the order they
run; a host rejected by one is not shown to the next, so a no-fit explanation counts every host
once, under the first filter that rejected it.

The engine's fast path gets the first four for free from its index (it only indexes the
schedulable hosts of its datacenter) and runs :data:`REQUEST_FILTERS` on the few hosts it walks;
the full scan behind an explanation runs them all. Both call these same functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from actors.scheduler.affinity import Policy
from actors.scheduler.hostview import HostView
from actors.scheduler.request import PlacementRequest
from cloudcore.store.records import AdminState, HostHealth, HostPower

__all__ = [
    "FILTERS",
    "REQUEST_FILTERS",
    "Filter",
    "admin_state",
    "affinity",
    "anti_affinity",
    "capacity",
    "datacenter",
    "health",
    "power",
]

Filter = Callable[[HostView, PlacementRequest, Mapping[str, int]], bool]


def datacenter(host: HostView, request: PlacementRequest, group_hosts: Mapping[str, int]) -> bool:
    """The host is in the request's datacenter."""
    return host.datacenter_id == request.datacenter_id


def admin_state(host: HostView, request: PlacementRequest, group_hosts: Mapping[str, int]) -> bool:
    """The operator allows new VMs on the host (ENABLED, not DISABLED or in MAINTENANCE)."""
    return host.admin_state is AdminState.ENABLED


def health(host: HostView, request: PlacementRequest, group_hosts: Mapping[str, int]) -> bool:
    """The monitor last saw the host HEALTHY (not UNKNOWN, DEGRADED or UNREACHABLE)."""
    return host.health is HostHealth.HEALTHY


def power(host: HostView, request: PlacementRequest, group_hosts: Mapping[str, int]) -> bool:
    """The host is powered ON (not in STANDBY, nor WAKING from it: power saving)."""
    return host.power is HostPower.ON


def capacity(host: HostView, request: PlacementRequest, group_hosts: Mapping[str, int]) -> bool:
    """The host's free allocatable CPUs and memory (overcommit included) take the request, and
    the VM has no more vCPUs than the host has physical CPUs (overcommit shares cores between
    VMs; it cannot make one VM wider than the machine)."""
    return (
        host.memory_mib - host.memory_mib_used >= request.memory_mib
        and host.cpus - host.cpus_used >= request.cpus
        and request.cpus <= host.max_vcpus
    )


def affinity(host: HostView, request: PlacementRequest, group_hosts: Mapping[str, int]) -> bool:
    """An affinity group that has VMs placed already only takes hosts that run some of them."""
    return request.policy is not Policy.AFFINITY or not group_hosts or host.id in group_hosts


def anti_affinity(
    host: HostView, request: PlacementRequest, group_hosts: Mapping[str, int]
) -> bool:
    """An anti-affinity group takes no host that already runs one of its VMs."""
    return request.policy is not Policy.ANTI_AFFINITY or host.id not in group_hosts


#: Every filter, by the name a no-fit explanation uses, in the order they run.
FILTERS: tuple[tuple[str, Filter], ...] = (
    ("datacenter", datacenter),
    ("admin_state", admin_state),
    ("health", health),
    ("power", power),
    ("capacity", capacity),
    ("affinity", affinity),
    ("anti_affinity", anti_affinity),
)

#: The filters the engine's index does not answer for it: run on each host it walks.
REQUEST_FILTERS: tuple[Filter, ...] = (capacity, affinity, anti_affinity)
