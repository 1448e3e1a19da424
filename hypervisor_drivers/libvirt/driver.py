"""The libvirt hypervisor driver: KVM/QEMU through ``qemu:///system`` (or ``qemu+ssh://host/system``),
and libvirt's in-process test hypervisor through ``test:///default`` or ``test:///<host.xml>``.

Every libvirt call runs in the driver's own small thread pool, so a slow hypervisor never blocks
the event loop nor starves the loop's default executor. Lifecycle events are pushed by libvirt
(see ``_events``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar
from urllib.parse import urlsplit

import structlog

from cloudcore.errors import BackendUnavailable, CloudcoreError, InvalidRequest
from hypervisor_drivers.base import (
    Capability,
    ConsoleEndpoint,
    ConsoleKind,
    DiskSpec,
    DomainSpec,
    DriverSettings,
    GuestPower,
    HostCapacity,
    HostInventory,
    HypervisorDriver,
    IscsiDisk,
    MigrationProgress,
    NicInfo,
    NicSpec,
    SnapshotInfo,
    StopOutcome,
    VMInfo,
)
from hypervisor_drivers.libvirt._client import LibvirtClient
from hypervisor_drivers.libvirt._errors import call_translated

__all__ = ["LibvirtDriver"]

_T = TypeVar("_T")
_log = structlog.get_logger("hypervisor_drivers.libvirt")
_WORKERS = 4
_ABORT_WAIT = 60.0  # seconds an aborted migration gets to give up

_COMMON = frozenset(
    {
        Capability.LIFECYCLE_EVENTS,
        Capability.GRACEFUL_STOP,
        Capability.REBOOT,
        Capability.PAUSE,
        Capability.SUSPEND,
        Capability.RECONFIGURE,
        Capability.LIVE_RECONFIGURE,
        Capability.SNAPSHOT,
    }
)
_CAPABILITIES = {
    # The test driver keeps network disks in the definition but cannot hot-plug: its attach and
    # detach are simulated (recorded in this process, logged as such, devices named
    # "simulated:sdX"); its migration is simulated between test hosts of this process, and so
    # is its host's power (standby and wake change nothing but a flag).
    "test": _COMMON
    | {
        Capability.ATTACH_VOLUME,
        Capability.ISCSI_DISKS,
        Capability.MIGRATE,
        Capability.HOST_POWER,
    },
    "qemu": _COMMON
    | {
        Capability.ATTACH_VOLUME,
        Capability.ISCSI_DISKS,
        Capability.MIGRATE,
        Capability.RESIZE_VOLUME,
        Capability.HOTPLUG_NIC,
        Capability.CONSOLE,
    },
}
_OTHER = frozenset({Capability.LIFECYCLE_EVENTS, Capability.GRACEFUL_STOP, Capability.PAUSE})


class LibvirtDriver(HypervisorDriver):
    """A libvirt connection. ``settings.extra["domain_type"]`` forces the domain type of new
    VMs (``kvm`` or ``qemu`` for TCG); by default ``kvm`` when libvirt offers it."""

    name = "libvirt"
    #: The library's qcow2 file is the backing file of a VM's linked clone (shared storage).
    image_format = "qcow2"

    def __init__(self, settings: DriverSettings) -> None:
        super().__init__(settings)
        scheme = urlsplit(settings.uri).scheme.partition("+")[0]
        self._capabilities = _CAPABILITIES.get(scheme, _OTHER)
        self._client: LibvirtClient | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        #: A test host's simulated power: True while it is in standby.
        self.standby = False

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._capabilities

    @property
    def domain_type(self) -> str:
        """The domain type new VMs get (``kvm``, ``qemu``, ``test``). Needs ``connect``."""
        return self._connected().domain_type

    # -- plumbing ------------------------------------------------------------------------------

    def _connected(self) -> LibvirtClient:
        if self._client is None:
            state = "closed" if self._closed else "not connected"
            raise BackendUnavailable(f"libvirt driver for {self._settings.uri} is {state}")
        if self._client.lost is not None:
            raise BackendUnavailable(
                f"libvirt connection to {self._settings.uri} lost ({self._client.lost}); "
                "close this driver and connect a new one"
            )
        return self._client

    async def _call(self, operation: Callable[[LibvirtClient], _T]) -> _T:
        client = self._connected()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(call_translated, operation, client)
        )

    async def connect(self) -> None:
        if self._client is not None:
            return
        if self._closed:
            raise BackendUnavailable("a closed driver cannot reconnect; create a new one")
        executor = ThreadPoolExecutor(_WORKERS, thread_name_prefix="libvirt")
        try:
            self._client = await asyncio.get_running_loop().run_in_executor(
                executor, call_translated, LibvirtClient, self._settings, self._publish
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor = executor
        _log.info(
            "hypervisor.connected", uri=self._settings.uri, domain_type=self._client.domain_type
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        executor, self._executor = self._executor, None
        self._closed = True
        self._events.close()
        if client is not None and executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, client.close)
            executor.shutdown(wait=False)
            _log.info("hypervisor.closed", uri=self._settings.uri)

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

    async def stop_vm(self, uuid: str, *, timeout: float) -> StopOutcome:
        async def request_shutdown() -> None:
            await self._call(lambda c: c.request_shutdown(uuid))

        async def power_off() -> None:
            await self._call(lambda c: c.power_off(uuid))

        return await self._stop_with_deadline(uuid, timeout, request_shutdown, power_off)

    async def reboot_vm(self, uuid: str, *, hard: bool = False) -> None:
        self._require(Capability.REBOOT)
        await self._call(lambda c: c.reboot(uuid, hard))

    async def pause_vm(self, uuid: str) -> None:
        self._require(Capability.PAUSE)
        await self._call(lambda c: c.pause(uuid))

    async def unpause_vm(self, uuid: str) -> None:
        self._require(Capability.PAUSE)
        await self._call(lambda c: c.unpause(uuid))

    async def suspend_vm(self, uuid: str) -> None:
        self._require(Capability.SUSPEND)
        await self._call(lambda c: c.suspend(uuid))

    async def resume_vm(self, uuid: str) -> None:
        self._require(Capability.SUSPEND)
        await self._call(lambda c: c.resume(uuid))

    async def destroy_vm(self, uuid: str) -> None:
        await self._call(lambda c: c.destroy(uuid))

    async def migrate_vm(
        self,
        uuid: str,
        destination: DriverSettings,
        *,
        live: bool = True,
        progress: Callable[[MigrationProgress], None] | None = None,
    ) -> None:
        self._require(Capability.MIGRATE)
        client = self._connected()
        loop = asyncio.get_running_loop()

        def report(sample: MigrationProgress) -> None:  # from a worker thread
            if progress is not None and not loop.is_closed():
                loop.call_soon_threadsafe(progress, sample)

        job = loop.run_in_executor(
            self._executor,
            functools.partial(
                call_translated, lambda c: c.migrate(uuid, destination, live, report), client
            ),
        )
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            await self._abort_migration(uuid, job)
            raise

    async def set_host_power(self, standby: bool) -> str:
        # Only a test host declares it: a real libvirt host's power is outside libvirt (its
        # power command, actors.host_power).
        self._require(Capability.HOST_POWER)
        self._connected()
        self.standby = standby
        _log.info("hypervisor.host_power_simulated", uri=self._settings.uri, standby=standby)
        return f"simulated: test host {'put to standby' if standby else 'woken'} (a flag only)"

    async def _abort_migration(self, uuid: str, job: asyncio.Future[None]) -> None:
        """Abort the migration ``job`` runs and wait until the hypervisor has given up."""
        _log.warning("hypervisor.migration_aborting", uri=self._settings.uri, vm=uuid)
        with contextlib.suppress(CloudcoreError):
            await self._call(lambda c: c.abort_job(uuid))
        done, _ = await asyncio.wait([job], timeout=_ABORT_WAIT)
        if job in done and not job.cancelled():
            job.exception()  # retrieved: the abort is what made it fail
        else:
            _log.error("hypervisor.migration_abort_unconfirmed", uri=self._settings.uri, vm=uuid)

    # -- changes -------------------------------------------------------------------------------

    async def reconfigure_vm(
        self, uuid: str, *, vcpus: int | None = None, memory_mib: int | None = None
    ) -> VMInfo:
        self._require(Capability.RECONFIGURE)
        if (vcpus is not None and vcpus < 1) or (memory_mib is not None and memory_mib < 1):
            raise InvalidRequest("a VM needs at least 1 vCPU and 1 MiB of memory")
        live = self.supports(Capability.LIVE_RECONFIGURE)
        return await self._call(lambda c: c.reconfigure(uuid, vcpus, memory_mib, live))

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

    async def resize_volume(self, uuid: str, serial: str, size_bytes: int) -> None:
        self._require(Capability.RESIZE_VOLUME)
        await self._call(lambda c: c.resize_disk(uuid, serial, size_bytes))

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

    async def console(self, uuid: str, kind: ConsoleKind = ConsoleKind.VNC) -> ConsoleEndpoint:
        self._require(Capability.CONSOLE)
        return await self._call(lambda c: c.console(uuid, kind))
