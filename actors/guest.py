"""The one place where the store's view of a VM meets the hypervisor driver's.

The store speaks of a VM (``VMSpec`` with ``cpus``; ``PowerState`` ON/OFF, the lifecycle's
vocabulary); a driver speaks of a guest domain (``DomainSpec`` with ``vcpus``; ``GuestPower``,
the hypervisor's vocabulary). Every translation between the two lives here, so a new driver
field or power state is mapped once.
"""

from __future__ import annotations

from cloudcore.store.records import VM, PowerState
from hypervisor_drivers.types import DomainSpec, GuestPower

__all__ = ["domain_name", "domain_spec", "to_power"]

_POWER = {
    GuestPower.RUNNING: PowerState.ON,
    GuestPower.PAUSED: PowerState.PAUSED,
    GuestPower.SUSPENDED: PowerState.SUSPENDED,
    GuestPower.STOPPED: PowerState.OFF,
    GuestPower.CRASHED: PowerState.OFF,
}


def to_power(power: GuestPower | None) -> PowerState:
    """The store's power state for what a driver reports (None: the guest is not there)."""
    if power is None:
        return PowerState.UNKNOWN
    return _POWER.get(power, PowerState.UNKNOWN)


def domain_name(vm_id: str) -> str:
    """The VM's name on the hypervisor: unique, and recognisably cloudcore's."""
    return f"cc-{vm_id}"


def domain_spec(vm: VM) -> DomainSpec:
    """What the driver defines for ``vm``: its id is the guest's UUID."""
    return DomainSpec(
        uuid=vm.id,
        name=domain_name(vm.id),
        vcpus=vm.spec.cpus,
        memory_mib=vm.spec.memory_mib,
        max_vcpus=vm.spec.max_cpus,
        max_memory_mib=vm.spec.max_memory_mib,
        extra=dict(vm.spec.extra),
    )
