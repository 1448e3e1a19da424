"""The scheduler's in-memory copy of one host: only what the filters and weighers read."""

from __future__ import annotations

from actors.scheduler.overcommit import physical_cpus
from cloudcore.store.records import AdminState, Host, HostHealth, HostPower

__all__ = ["HostView"]


class HostView:
    """A mutable, slotted snapshot of a :class:`~cloudcore.store.records.Host`.

    The engine changes ``cpus_used`` and ``memory_mib_used`` as it learns of claims and releases,
    between two refreshes from the store. ``max_vcpus`` is the most vCPUs one VM may have here:
    the physical CPU count when the host recorded it, else the allocatable count.
    """

    __slots__ = (
        "admin_state",
        "cpus",
        "cpus_used",
        "datacenter_id",
        "health",
        "id",
        "max_vcpus",
        "memory_mib",
        "memory_mib_used",
        "power",
        "version",
    )

    def __init__(self, host: Host) -> None:
        self.id = host.id
        self.datacenter_id = host.datacenter_id
        self.version = host.version
        self.cpus = host.cpus
        self.memory_mib = host.memory_mib
        self.cpus_used = host.cpus_used
        self.memory_mib_used = host.memory_mib_used
        self.health = host.health
        self.admin_state = host.admin_state
        self.power = host.power_state
        self.max_vcpus = physical_cpus(host) or host.cpus

    @property
    def free_cpus(self) -> int:
        return self.cpus - self.cpus_used

    @property
    def free_memory_mib(self) -> int:
        return self.memory_mib - self.memory_mib_used

    @property
    def schedulable(self) -> bool:
        """ENABLED, HEALTHY and powered ON: what the store's claim itself requires."""
        return (
            self.admin_state is AdminState.ENABLED
            and self.health is HostHealth.HEALTHY
            and self.power is HostPower.ON
        )

    def __repr__(self) -> str:
        return (
            f"<HostView {self.id} {self.free_cpus}/{self.cpus} CPUs "
            f"{self.free_memory_mib}/{self.memory_mib} MiB free {self.admin_state} {self.health} "
            f"{self.power}>"
        )
