"""Drivers whose operations are each one blocking call on a client, run off the event loop.

The libvirt, vSphere, XenServer and Hyper-V drivers each hold a client that speaks its backend's
protocol in blocking calls, and run every call in a worker thread. What they do around a call —
check the capability it needs, check the input, name the client's method — is the same for all
four, so it is written once here. A driver says how a call runs (:meth:`_call`: which thread,
which errors become which :mod:`cloudcore.errors` error) and overrides what its backend does
differently (stopping, migration, image transfer).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from cloudcore.errors import InvalidRequest
from hypervisor_drivers.base import HypervisorDriver
from hypervisor_drivers.types import (
    Capability,
    DiskSpec,
    DomainSpec,
    GuestPower,
    HostCapacity,
    HostInventory,
    IscsiDisk,
    NicInfo,
    NicSpec,
    SnapshotInfo,
    VMInfo,
)

__all__ = ["BlockingClient", "DelegatingDriver"]

_T = TypeVar("_T")


class BlockingClient(Protocol):
    """What a driver's client offers: one blocking call per driver operation, VMs by uuid."""

    def inventory(self, /) -> HostInventory: ...
    def capacity(self, /) -> HostCapacity: ...
    def list_vms(self, /) -> list[VMInfo]: ...
    def get_vm(self, uuid: str, /) -> VMInfo: ...
    def power(self, uuid: str, /) -> GuestPower: ...
    def define(self, spec: DomainSpec, /) -> VMInfo: ...
    def start(self, uuid: str, /) -> None: ...
    def reboot(self, uuid: str, hard: bool, /) -> None: ...
    def suspend(self, uuid: str, /) -> None: ...
    def resume(self, uuid: str, /) -> None: ...
    def destroy(self, uuid: str, /) -> None: ...
    def create_snapshot(self, uuid: str, name: str, /) -> SnapshotInfo: ...
    def list_snapshots(self, uuid: str, /) -> list[SnapshotInfo]: ...
    def revert_snapshot(self, uuid: str, name: str, /) -> None: ...
    def delete_snapshot(self, uuid: str, name: str, /) -> None: ...
    def attach(self, uuid: str, disk: DiskSpec, /) -> str: ...
    def detach(self, uuid: str, serial: str, /) -> None: ...
    def list_nics(self, uuid: str, /) -> list[NicInfo]: ...
    def attach_nic(self, uuid: str, nic: NicSpec, /) -> None: ...
    def detach_nic(self, uuid: str, mac: str, /) -> None: ...


ClientT = TypeVar("ClientT", bound=BlockingClient)


class DelegatingDriver(HypervisorDriver, Generic[ClientT]):
    """The operations every client-backed driver performs the same way."""

    @abc.abstractmethod
    async def _call(self, operation: Callable[[ClientT], _T]) -> _T:
        """Run ``operation`` on the connected client in the driver's worker thread, its
        failures translated (``BackendUnavailable`` when not connected)."""

    # -- host and reading ----------------------------------------------------------------------

    async def host_inventory(self) -> HostInventory:
        return await self._call(lambda c: c.inventory())

    async def host_capacity(self) -> HostCapacity:
        return await self._call(lambda c: c.capacity())

    async def list_vms(self) -> list[VMInfo]:
        return await self._call(lambda c: c.list_vms())

    async def get_vm(self, uuid: str) -> VMInfo:
        return await self._call(lambda c: c.get_vm(uuid))

    async def power_state(self, uuid: str) -> GuestPower:
        return await self._call(lambda c: c.power(uuid))

    # -- lifecycle -----------------------------------------------------------------------------

    async def define_vm(self, spec: DomainSpec) -> VMInfo:
        if any(isinstance(disk, IscsiDisk) for disk in spec.disks):
            self._require(Capability.ISCSI_DISKS)
        return await self._call(lambda c: c.define(spec))

    async def start_vm(self, uuid: str) -> None:
        await self._call(lambda c: c.start(uuid))

    async def reboot_vm(self, uuid: str, *, hard: bool = False) -> None:
        self._require(Capability.REBOOT)
        await self._call(lambda c: c.reboot(uuid, hard))

    async def suspend_vm(self, uuid: str) -> None:
        self._require(Capability.SUSPEND)
        await self._call(lambda c: c.suspend(uuid))

    async def resume_vm(self, uuid: str) -> None:
        self._require(Capability.SUSPEND)
        await self._call(lambda c: c.resume(uuid))

    async def destroy_vm(self, uuid: str) -> None:
        await self._call(lambda c: c.destroy(uuid))

    # -- changes -------------------------------------------------------------------------------

    @staticmethod
    def _check_sizes(vcpus: int | None, memory_mib: int | None) -> None:
        if (vcpus is not None and vcpus < 1) or (memory_mib is not None and memory_mib < 1):
            raise InvalidRequest("a VM needs at least 1 vCPU and 1 MiB of memory")

    async def create_snapshot(self, uuid: str, name: str) -> SnapshotInfo:
        self._require(Capability.SNAPSHOT)
        return await self._call(lambda c: c.create_snapshot(uuid, name))

    async def list_snapshots(self, uuid: str) -> list[SnapshotInfo]:
        self._require(Capability.SNAPSHOT)
        return await self._call(lambda c: c.list_snapshots(uuid))

    async def revert_snapshot(self, uuid: str, name: str) -> None:
        self._require(Capability.SNAPSHOT)
        await self._call(lambda c: c.revert_snapshot(uuid, name))

    async def delete_snapshot(self, uuid: str, name: str) -> None:
        self._require(Capability.SNAPSHOT)
        await self._call(lambda c: c.delete_snapshot(uuid, name))

    async def attach_volume(self, uuid: str, disk: DiskSpec) -> str:
        self._require(Capability.ATTACH_VOLUME)
        if isinstance(disk, IscsiDisk):
            self._require(Capability.ISCSI_DISKS)
        if disk.serial is None:
            raise InvalidRequest("attach_volume needs disk.serial (the volume id)")
        return await self._call(lambda c: c.attach(uuid, disk))

    async def detach_volume(self, uuid: str, serial: str) -> None:
        self._require(Capability.ATTACH_VOLUME)
        await self._call(lambda c: c.detach(uuid, serial))

    async def list_nics(self, uuid: str) -> list[NicInfo]:
        return await self._call(lambda c: c.list_nics(uuid))

    async def attach_nic(self, uuid: str, nic: NicSpec) -> None:
        self._require(Capability.HOTPLUG_NIC)
        if nic.mac is None:
            raise InvalidRequest("attach_nic needs nic.mac")
        await self._call(lambda c: c.attach_nic(uuid, nic))

    async def detach_nic(self, uuid: str, mac: str) -> None:
        self._require(Capability.HOTPLUG_NIC)
        await self._call(lambda c: c.detach_nic(uuid, mac))
