"""The one place where the store's view of a VM meets the hypervisor driver's.

The store speaks of a VM (``VMSpec`` with ``cpus``; ``PowerState`` ON/OFF, the lifecycle's
vocabulary); a driver speaks of a guest domain (``DomainSpec`` with ``vcpus``; ``GuestPower``,
the hypervisor's vocabulary). Every translation between the two lives here, so a new driver
field or power state is mapped once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import assert_never

from actors.operations import (
    DeleteParams,
    DeleteSnapshotParams,
    MigrateParams,
    OperationParams,
    PauseParams,
    RebootParams,
    ReconfigureParams,
    ResumeParams,
    RevertSnapshotParams,
    SnapshotParams,
    StartParams,
    StopParams,
    SuspendParams,
)
from cloudcore.errors import UnsupportedOperation
from cloudcore.store.records import VM, PowerState, VMState
from hypervisor_drivers.base import HypervisorDriver
from hypervisor_drivers.types import DomainSpec, GuestPower

__all__ = ["domain_name", "domain_spec", "drive", "to_power"]

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


async def drive(
    driver: HypervisorDriver,
    uuid: str,
    params: OperationParams,
    *,
    source: VMState,
    stop_timeout: Callable[[StopParams], float],
) -> None:
    """What an operation on a placed VM asks of its hypervisor (``source``: the state it left,
    which tells a resume from a pause and from a suspend)."""
    match params:
        case StartParams():
            await driver.start_vm(uuid)
        case StopParams():
            await driver.stop_vm(uuid, timeout=stop_timeout(params))
        case RebootParams(hard=hard):
            await driver.reboot_vm(uuid, hard=hard)
        case PauseParams():
            await driver.pause_vm(uuid)
        case ResumeParams():
            paused = source is VMState.PAUSED
            await (driver.unpause_vm(uuid) if paused else driver.resume_vm(uuid))
        case SuspendParams():
            await driver.suspend_vm(uuid)
        case ReconfigureParams(cpus=cpus, memory_mib=memory_mib):
            await driver.reconfigure_vm(uuid, vcpus=cpus, memory_mib=memory_mib)
        case SnapshotParams(name=name):
            await driver.create_snapshot(uuid, name)
        case RevertSnapshotParams(name=name):
            await driver.revert_snapshot(uuid, name)
        case DeleteSnapshotParams(name=name):
            await driver.delete_snapshot(uuid, name)
        case DeleteParams():
            await driver.destroy_vm(uuid)
        case MigrateParams():  # run by actors.migration with its plan; here so the match is whole
            raise UnsupportedOperation("a migration needs its plan")
        case _:
            assert_never(params)
