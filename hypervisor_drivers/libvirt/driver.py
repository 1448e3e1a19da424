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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar
from urllib.parse import urlsplit

import structlog

from cloudcore.errors import BackendUnavailable, CloudcoreError
from hypervisor_drivers.base import (
    Capability,
    ConsoleEndpoint,
    ConsoleKind,
    DriverSettings,
    IscsiDisk,
    MigrationProgress,
    StopOutcome,
    VMInfo,
)
from hypervisor_drivers.delegating import DelegatingDriver
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


class LibvirtDriver(DelegatingDriver[LibvirtClient]):
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

    # -- lifecycle -----------------------------------------------------------------------------

    async def stop_vm(self, uuid: str, *, timeout: float) -> StopOutcome:
        async def request_shutdown() -> None:
            await self._call(lambda c: c.request_shutdown(uuid))

        async def power_off() -> None:
            await self._call(lambda c: c.power_off(uuid))

        return await self._stop_with_deadline(uuid, timeout, request_shutdown, power_off)

    async def pause_vm(self, uuid: str) -> None:
        self._require(Capability.PAUSE)
        await self._call(lambda c: c.pause(uuid))

    async def unpause_vm(self, uuid: str) -> None:
        self._require(Capability.PAUSE)
        await self._call(lambda c: c.unpause(uuid))

    async def migrate_vm(
        self,
        uuid: str,
        destination: DriverSettings,
        *,
        live: bool = True,
        progress: Callable[[MigrationProgress], None] | None = None,
        volumes: Sequence[IscsiDisk] = (),
    ) -> None:
        self._require(Capability.MIGRATE)
        if volumes:
            self._require(Capability.ISCSI_DISKS)
        client = self._connected()
        loop = asyncio.get_running_loop()

        def report(sample: MigrationProgress) -> None:  # from a worker thread
            if progress is not None and not loop.is_closed():
                loop.call_soon_threadsafe(progress, sample)

        job = loop.run_in_executor(
            self._executor,
            functools.partial(
                call_translated,
                lambda c: c.migrate(uuid, destination, live, report, volumes),
                client,
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
        self._check_sizes(vcpus, memory_mib)
        live = self.supports(Capability.LIVE_RECONFIGURE)
        return await self._call(lambda c: c.reconfigure(uuid, vcpus, memory_mib, live))

    async def resize_volume(self, uuid: str, serial: str, size_bytes: int) -> None:
        self._require(Capability.RESIZE_VOLUME)
        await self._call(lambda c: c.resize_disk(uuid, serial, size_bytes))

    async def console(self, uuid: str, kind: ConsoleKind = ConsoleKind.VNC) -> ConsoleEndpoint:
        self._require(Capability.CONSOLE)
        return await self._call(lambda c: c.console(uuid, kind))
