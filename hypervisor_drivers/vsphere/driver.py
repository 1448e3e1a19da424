"""The vSphere hypervisor driver: one ESXi host of a vCenter datacenter, through pyvmomi.

A cloudcore host is one ESXi host, as Abiquo manages vSphere: the URI names the vCenter
(``https://vcenter.example/sdk``), ``extra`` the datacenter, host and datastore (see
``_connection`` for every setting, TLS and credentials). Drivers of hosts in the same vCenter
share one session. Every pyvmomi call runs in the driver's own small thread pool, never on the
event loop; lifecycle events come from a PropertyCollector watched in a thread (``_events``).

vSphere has no pause (vCPUs stopped, memory kept): ``PAUSE`` is not declared. Disks are files
on datastores (``[datastore] dir/disk.vmdk``); iSCSI LUNs are datastores to vSphere, not VM
disks, so ``ISCSI_DISKS`` is not declared either.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import structlog

from cloudcore.errors import BackendUnavailable
from hypervisor_drivers.base import (
    Capability,
    DriverSettings,
    FileDisk,
    IscsiDisk,
    MigrationProgress,
    StopOutcome,
    VMInfo,
)
from hypervisor_drivers.delegating import DelegatingDriver
from hypervisor_drivers.vsphere import _connection, _datastore
from hypervisor_drivers.vsphere._client import HostClient
from hypervisor_drivers.vsphere._errors import TRANSPORT_ERRORS, call_translated
from hypervisor_drivers.vsphere._events import Watcher

__all__ = ["VSphereDriver"]

_T = TypeVar("_T")
_log = structlog.get_logger("hypervisor_drivers.vsphere")
_WORKERS = 4

_CAPABILITIES = frozenset(
    {
        Capability.LIFECYCLE_EVENTS,
        Capability.GRACEFUL_STOP,
        Capability.REBOOT,
        Capability.SUSPEND,
        Capability.RECONFIGURE,
        Capability.LIVE_RECONFIGURE,
        Capability.SNAPSHOT,
        Capability.ATTACH_VOLUME,
        Capability.MIGRATE,
        Capability.HOTPLUG_NIC,
        Capability.IMPORT_IMAGE,
    }
)


def _open(settings: DriverSettings) -> HostClient:
    """Blocking: this host's client over the vCenter's shared session."""
    session = _connection.acquire(settings)
    try:
        return HostClient(session, settings)
    except BaseException:
        _connection.release(session)
        raise


class VSphereDriver(DelegatingDriver[HostClient]):
    """One ESXi host in a vCenter."""

    name = "vsphere"

    def __init__(self, settings: DriverSettings) -> None:
        super().__init__(settings)
        self._client: HostClient | None = None
        self._watcher: Watcher | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    @property
    def capabilities(self) -> frozenset[Capability]:
        return _CAPABILITIES

    # -- plumbing ------------------------------------------------------------------------------

    def _connected(self) -> HostClient:
        if self._client is None:
            _connection.require(None, self._settings.uri, self._closed)
        assert self._client is not None
        _connection.require(self._client.session, self._settings.uri, self._closed)
        return self._client

    def _run(self, operation: Callable[[HostClient], _T], client: HostClient) -> _T:
        """Blocking. A transport error fails this call; it loses the shared session (every
        host of the vCenter) only when a cheap read on a fresh connection fails as well: one
        dropped connection is not a lost session."""
        try:
            return call_translated(operation, client)
        except BackendUnavailable as exc:
            if isinstance(exc.__cause__, TRANSPORT_ERRORS) and not client.session.alive():
                client.session.mark_lost(str(exc))
            raise

    async def _call(self, operation: Callable[[HostClient], _T]) -> _T:
        client = self._connected()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(self._run, operation, client)
        )

    async def connect(self) -> None:
        if self._client is not None:
            return
        if self._closed:
            raise BackendUnavailable("a closed driver cannot reconnect; create a new one")
        executor = ThreadPoolExecutor(_WORKERS, thread_name_prefix="vsphere")
        loop = asyncio.get_running_loop()
        try:
            client = await loop.run_in_executor(executor, call_translated, _open, self._settings)
            watcher = Watcher(client.session.content, client.refs.host, self._publish)
            watcher.start()
            await loop.run_in_executor(executor, watcher.ready.wait, 30)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._client, self._watcher, self._executor = client, watcher, executor
        _log.info("hypervisor.connected", uri=self._settings.uri, host=client.refs.host_name)

    async def close(self) -> None:
        client, self._client = self._client, None
        watcher, self._watcher = self._watcher, None
        executor, self._executor = self._executor, None
        self._closed = True
        self._events.close()
        if client is None or executor is None:
            return
        loop = asyncio.get_running_loop()
        if watcher is not None:
            await loop.run_in_executor(executor, watcher.stop)
        await loop.run_in_executor(executor, _connection.release, client.session)
        executor.shutdown(wait=False)
        _log.info("hypervisor.closed", uri=self._settings.uri)

    # -- lifecycle -----------------------------------------------------------------------------

    async def stop_vm(self, uuid: str, *, timeout: float) -> StopOutcome:
        if timeout <= 0:  # one call: the state check rides on the VM's lookup
            stopped = await self._call(lambda c: c.hard_stop(uuid))
            return StopOutcome.FORCED if stopped else StopOutcome.ALREADY_STOPPED

        async def request_shutdown() -> None:
            await self._call(lambda c: c.request_shutdown(uuid))

        async def power_off() -> None:
            await self._call(lambda c: c.power_off(uuid))

        return await self._stop_with_deadline(uuid, timeout, request_shutdown, power_off)

    async def pause_vm(self, uuid: str) -> None:
        self._require(Capability.PAUSE)

    async def unpause_vm(self, uuid: str) -> None:
        self._require(Capability.PAUSE)

    #: ESXi's VMDK is a descriptor plus a flat extent of raw bytes: the driver takes the raw
    #: image and writes the descriptor (see _datastore).
    image_format = "raw"

    async def import_image(self, path: str, name: str) -> FileDisk:
        """HTTP PUTs of the flat extent and its descriptor to the datastore's ``/folder``
        service (vcsim models it, and checks the extent is there when the VM is created)."""
        return await self._call(lambda c: _datastore.upload_image(c.session, c.refs, path, name))

    async def remove_image(self, name: str) -> None:
        await self._call(lambda c: _datastore.remove_image(c.session, c.refs, name))

    async def migrate_vm(
        self,
        uuid: str,
        destination: DriverSettings,
        *,
        live: bool = True,
        progress: Callable[[MigrationProgress], None] | None = None,
        volumes: Sequence[IscsiDisk] = (),
    ) -> None:
        # The backend's migration task reports no progress here: ``progress`` is not called.
        """RelocateVM to the destination host of the same vCenter: vMotion when the VM runs,
        a cold move otherwise; the files move too when the destination's datastore is not one
        the VM is on."""
        self._require(Capability.MIGRATE)
        if volumes:
            self._require(Capability.ISCSI_DISKS)
        await self._call(lambda c: c.migrate(uuid, destination))

    # -- changes -------------------------------------------------------------------------------

    async def reconfigure_vm(
        self, uuid: str, *, vcpus: int | None = None, memory_mib: int | None = None
    ) -> VMInfo:
        self._require(Capability.RECONFIGURE)
        self._check_sizes(vcpus, memory_mib)
        return await self._call(lambda c: c.reconfigure(uuid, vcpus, memory_mib))
