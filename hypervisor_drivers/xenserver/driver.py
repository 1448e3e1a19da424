"""The XenServer / XCP-ng driver: XAPI through ``XenAPI.Session`` to the pool master.

One driver is one host of a pool: ``settings.uri`` is the pool master's URL
(``https://xen-master``), ``settings.extra["host"]`` the host's name label or uuid (default: the
master), ``extra["sr"]`` the SR whose VDIs disks name (default: the host's local SR, else the
pool's default SR). The user is ``settings.username`` or ``extra["username"]`` (default root); the
password is ``settings.password`` or the environment variable named by ``extra["password_env"]``;
it is never logged. ``extra["timeout"]`` bounds every call (seconds; a start is one synchronous
call), ``extra["event_batch"]`` the pause between two event replies (seconds, default 0.05).

XAPI calls run in one worker thread (a session is one XML-RPC connection); lifecycle events come
from ``event.from`` on a second session in its own thread (``_events``).
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
    LifecycleEvent,
    MigrationProgress,
    StopOutcome,
    VMInfo,
)
from hypervisor_drivers.delegating import DelegatingDriver
from hypervisor_drivers.xenserver import _import
from hypervisor_drivers.xenserver._client import XenClient
from hypervisor_drivers.xenserver._errors import call_translated
from hypervisor_drivers.xenserver._events import EventWatcher

__all__ = ["XenServerDriver"]

_T = TypeVar("_T")
_log = structlog.get_logger("hypervisor_drivers.xenserver")

# No ISCSI_DISKS: on XenServer a LUN is an lvmoiscsi SR made by storage, whose VDIs disks name.
_CAPABILITIES = frozenset(
    {
        Capability.LIFECYCLE_EVENTS,
        Capability.GRACEFUL_STOP,
        Capability.REBOOT,
        Capability.PAUSE,
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


class XenServerDriver(DelegatingDriver[XenClient]):
    """One XenServer host, reached through its pool master."""

    name = "xenserver"

    def __init__(self, settings: DriverSettings) -> None:
        super().__init__(settings)
        self._client: XenClient | None = None
        self._watcher: EventWatcher | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    @property
    def capabilities(self) -> frozenset[Capability]:
        return _CAPABILITIES

    # -- plumbing ------------------------------------------------------------------------------

    def _connected(self) -> XenClient:
        if self._client is None:
            state = "closed" if self._closed else "not connected"
            raise BackendUnavailable(f"xenserver driver for {self._settings.uri} is {state}")
        return self._client

    async def _call(self, operation: Callable[[XenClient], _T]) -> _T:
        client = self._connected()
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(call_translated, operation, client)
        )

    async def connect(self) -> None:
        if self._client is not None:
            return
        if self._closed:
            raise BackendUnavailable("a closed driver cannot reconnect; create a new one")
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(1, thread_name_prefix="xapi")
        try:
            client = await loop.run_in_executor(
                executor, call_translated, XenClient, self._settings
            )
            watcher = EventWatcher(
                self._settings,
                client.host,
                client.host == client.master,
                functools.partial(self._observed, client),
            )
            try:
                await loop.run_in_executor(executor, call_translated, watcher.start)
            except BaseException:
                await loop.run_in_executor(executor, client.close)
                raise
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._client, self._watcher, self._executor = client, watcher, executor
        _log.info("hypervisor.connected", uri=self._settings.uri, host=client.host)

    def _observed(self, client: XenClient, event: LifecycleEvent) -> None:
        # An event may report a change made behind the client's back: it stops trusting what
        # its own last call left (see XenClient.forget), then the event goes to subscribers.
        client.forget(event.vm_uuid, event.power)
        self._publish(event)

    async def close(self) -> None:
        client, self._client = self._client, None
        watcher, self._watcher = self._watcher, None
        executor, self._executor = self._executor, None
        self._closed = True
        self._events.close()
        loop = asyncio.get_running_loop()
        if watcher is not None:
            await loop.run_in_executor(None, watcher.stop)
        if client is not None and executor is not None:
            await loop.run_in_executor(executor, client.close)
            executor.shutdown(wait=False)
            _log.info("hypervisor.closed", uri=self._settings.uri)

    # -- lifecycle -----------------------------------------------------------------------------

    async def stop_vm(self, uuid: str, *, timeout: float) -> StopOutcome:
        if timeout <= 0:  # no guest to wait for: one XAPI call, its refusal read for the outcome
            return await self._call(lambda c: c.power_off(uuid))
        tasks: list[str] = []

        async def request_shutdown() -> None:
            tasks.append(await self._call(lambda c: c.request_shutdown(uuid)))

        async def power_off() -> None:
            for task in tasks:  # the guest did not make it: stop asking
                await self._call(lambda c: c.cancel_task(task))  # noqa: B023
            await self._call(lambda c: c.power_off(uuid))

        try:
            return await self._stop_with_deadline(uuid, timeout, request_shutdown, power_off)
        finally:
            for task in tasks:  # a finished task is still a record on the pool master
                await self._call(lambda c: c.cancel_task(task))  # noqa: B023

    async def pause_vm(self, uuid: str) -> None:
        self._require(Capability.PAUSE)
        await self._call(lambda c: c.pause(uuid))

    async def unpause_vm(self, uuid: str) -> None:
        self._require(Capability.PAUSE)
        await self._call(lambda c: c.unpause(uuid))

    #: A VHD (qemu-img's ``vpc``), imported into a VDI through XAPI's ``/import_raw_vdi``.
    image_format = "vpc"

    async def import_image(self, path: str, name: str) -> FileDisk:
        verify = self._settings.extra.get("verify_tls", "true").lower() not in ("false", "0")
        return await self._call(
            lambda c: _import.import_image(c, self._settings.uri, path, name, verify_tls=verify)
        )

    async def remove_image(self, name: str) -> None:
        await self._call(lambda c: _import.remove_image(c, name))

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
