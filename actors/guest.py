"""The one place where the store's view of a VM meets the hypervisor driver's.

The store speaks of a VM (``VMSpec`` with ``cpus``; ``PowerState`` ON/OFF, the lifecycle's
vocabulary); a driver speaks of a guest domain (``DomainSpec`` with ``vcpus``; ``GuestPower``,
the hypervisor's vocabulary). Every translation between the two lives here, so a new driver
field or power state is mapped once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from cloudcore.store import Store
from cloudcore.store.records import VM, IpAllocation, Network, NetworkKind, PowerState, VMState
from hypervisor_drivers.base import HypervisorDriver
from hypervisor_drivers.types import DomainSpec, GuestPower, NicSpec

__all__ = ["domain_name", "domain_spec", "drive", "nic_spec", "to_power", "vm_nics"]

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


def domain_spec(vm: VM, nics: Sequence[NicSpec] = ()) -> DomainSpec:
    """What the driver defines for ``vm``: its id is the guest's UUID; ``nics`` its NICs
    (:func:`vm_nics`)."""
    return DomainSpec(
        uuid=vm.id,
        name=domain_name(vm.id),
        vcpus=vm.spec.cpus,
        memory_mib=vm.spec.memory_mib,
        nics=list(nics),
        max_vcpus=vm.spec.max_cpus,
        max_memory_mib=vm.spec.max_memory_mib,
        extra=dict(vm.spec.extra),
    )


def nic_spec(nic: IpAllocation, network: Network) -> NicSpec:
    """A NIC the store holds, as a driver plugs it: on the network's bridge (named by the
    network when it has none), with its MAC, its VLAN tag and the network's ``extra`` (where
    a driver finds its port group, network or switch)."""
    return NicSpec(
        kind="bridge",
        source=network.bridge or network.name,
        mac=nic.mac,
        vlan=network.vlan if network.kind is NetworkKind.VLAN else None,
        extra=dict(network.extra),
    )


async def vm_nics(store: Store, vm_id: str) -> list[NicSpec]:
    """The NICs the store holds for the VM, in the order they were made."""
    held = sorted(await store.list_ips(vm_id=vm_id), key=lambda n: n.created_at)
    networks: dict[str, Network] = {}
    for nic in held:
        if nic.network_id not in networks:
            networks[nic.network_id] = await store.get(Network, nic.network_id)
    return [nic_spec(n, networks[n.network_id]) for n in held if n.mac is not None]


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
