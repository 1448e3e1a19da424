"""The Hyper-V driver: PowerShell's Hyper-V cmdlets over WinRM, through pywinrm.

``settings.uri`` is the WinRM endpoint (``https://hv01:5986/wsman``); ``username`` (or
``extra["username"]``, default Administrator), and the password in ``password`` or in the
environment variable named by ``extra["password_env"]`` (never logged). ``extra``:
``transport`` (pywinrm's: ``ntlm`` by default, ``kerberos``, ``credssp``, ``basic``...),
``cert_validation`` (``validate``/``ignore``), ``ca_trust_path``, ``timeout`` (seconds per call),
``poll_interval`` (seconds between power sweeps: Hyper-V pushes no events over WinRM), on a
migration destination ``computer_name`` (default: the uri's host name), and ``image_dir`` (where
templates' VHDX copies go; default: the host's ``VirtualHardDiskPath``).

Calls run in one worker thread; every script is framed by ``_script`` (arguments as data, errors
as JSON records), its JSON output validated by ``_client``.
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
from hypervisor_drivers.events import PowerPoller
from hypervisor_drivers.hyperv import _images
from hypervisor_drivers.hyperv._client import HyperVClient
from hypervisor_drivers.hyperv._errors import call_translated

__all__ = ["HyperVDriver"]

_T = TypeVar("_T")
_log = structlog.get_logger("hypervisor_drivers.hyperv")

# No LIFECYCLE_EVENTS (polled), no LIVE_RECONFIGURE (kept simple: sizes change while off), no
# ISCSI_DISKS (Hyper-V opens LUNs through the host's initiator, which storage would set up).
_CAPABILITIES = frozenset(
    {
        Capability.GRACEFUL_STOP,
        Capability.REBOOT,
        Capability.PAUSE,
        Capability.SUSPEND,
        Capability.RECONFIGURE,
        Capability.SNAPSHOT,
        Capability.ATTACH_VOLUME,
        Capability.HOTPLUG_NIC,
        Capability.MIGRATE,
        Capability.IMPORT_IMAGE,
    }
)


class HyperVDriver(DelegatingDriver[HyperVClient]):
    """One Hyper-V server, reached through WinRM."""

    name = "hyperv"

    def __init__(self, settings: DriverSettings) -> None:
        super().__init__(settings)
        self._client: HyperVClient | None = None
        self._poller: PowerPoller | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    @property
    def capabilities(self) -> frozenset[Capability]:
        return _CAPABILITIES

    # -- plumbing ------------------------------------------------------------------------------

    def _connected(self) -> HyperVClient:
        if self._client is None:
            state = "closed" if self._closed else "not connected"
            raise BackendUnavailable(f"hyperv driver for {self._settings.uri} is {state}")
        return self._client

    async def _call(self, operation: Callable[[HyperVClient], _T]) -> _T:
        client = self._connected()
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(call_translated, operation, client)
        )

    async def connect(self) -> None:
        if self._client is not None:
            return
        if self._closed:
            raise BackendUnavailable("a closed driver cannot reconnect; create a new one")
        executor = ThreadPoolExecutor(1, thread_name_prefix="winrm")
        try:
            client = await asyncio.get_running_loop().run_in_executor(
                executor, call_translated, HyperVClient, self._settings
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._client, self._executor = client, executor
        interval = float(self._settings.extra.get("poll_interval", "2"))
        self._poller = PowerPoller(self.list_vms, self._events, interval)
        try:
            await self._poller.start()
        except BaseException:
            await self.close()
            raise
        _log.info("hypervisor.connected", uri=self._settings.uri, host=client.computer_name)

    async def close(self) -> None:
        poller, self._poller = self._poller, None
        self._closed = True
        if poller is not None:
            await poller.stop()
        client, self._client = self._client, None
        executor, self._executor = self._executor, None
        self._events.close()
        if executor is not None:
            if client is not None:
                await asyncio.get_running_loop().run_in_executor(executor, client.close)
            executor.shutdown(wait=False)
            _log.info("hypervisor.closed", uri=self._settings.uri)

    # -- lifecycle -----------------------------------------------------------------------------

    async def stop_vm(self, uuid: str, *, timeout: float) -> StopOutcome:
        if timeout <= 0:  # nothing to wait for: one script, its state guard inside
            return await self._call(lambda c: c.power_off(uuid))

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
        # The backend's migration task reports no progress here: ``progress`` is not called.
        self._require(Capability.MIGRATE)
        if volumes:
            self._require(Capability.ISCSI_DISKS)
        await self._call(lambda c: c.migrate(uuid, destination, live))

    # -- changes -------------------------------------------------------------------------------

    async def reconfigure_vm(
        self, uuid: str, *, vcpus: int | None = None, memory_mib: int | None = None
    ) -> VMInfo:
        self._require(Capability.RECONFIGURE)
        self._check_sizes(vcpus, memory_mib)
        return await self._call(lambda c: c.reconfigure(uuid, vcpus, memory_mib))

    # -- images --------------------------------------------------------------------------------

    image_format = "vhdx"

    async def import_image(self, path: str, name: str) -> FileDisk:
        """The VHDX copied to the host through WinRM (``_images``: slow, about 6 KiB of data
        a script; runs of zeros cheap), checked by its sha256, as ``<dir>\\<name>.vhdx``."""
        self._require(Capability.IMPORT_IMAGE)
        return await self._call(lambda c: _images.import_image(c, path, name))

    async def remove_image(self, name: str) -> None:
        self._require(Capability.IMPORT_IMAGE)
        await self._call(lambda c: _images.remove_image(c, name))
