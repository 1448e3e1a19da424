"""The hypervisor driver interface: what every hypervisor plugin implements, written as a spec.

A driver is one connection to one hypervisor host (a libvirt URI, a vCenter host, a XenServer
pool member, a Hyper-V server). The actors above it call these coroutines; the driver runs its
blocking SDK in threads, never on the event loop, and never returns SDK objects or lets SDK
exceptions escape: every failure is a :mod:`cloudcore.errors` error.

Errors common to every method (not repeated below):

- ``BackendUnavailable`` (retryable): the hypervisor cannot be reached, or the connection was lost;
  also raised by any method called before ``connect`` or after ``close``.
- ``UnsupportedOperation``: the method needs a :class:`Capability` the driver does not declare.
- ``DriverError``: the hypervisor failed the operation for another reason (``code`` says which).

VMs are named by the orchestrator's ``uuid``. Methods that act on a VM raise ``NotFound`` when the
hypervisor has no VM with that uuid (except ``destroy_vm``, which is idempotent), and
``IllegalTransition`` when the VM's power state does not allow the operation. Operations that find
the VM already in their target state return without doing anything, so a retried call after a
lost reply is safe.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from cloudcore.errors import IllegalTransition, UnsupportedOperation
from hypervisor_drivers.events import EventHub, EventStream
from hypervisor_drivers.types import (
    Capability,
    ConsoleEndpoint,
    ConsoleKind,
    DiskSpec,
    DomainSpec,
    DriverSettings,
    EventKind,
    FileDisk,
    GuestPower,
    HostCapacity,
    HostInventory,
    IscsiDisk,
    LifecycleEvent,
    MigrationProgress,
    NicInfo,
    NicSpec,
    SnapshotInfo,
    StopOutcome,
    VMInfo,
)

__all__ = [
    "Capability",
    "ConsoleEndpoint",
    "ConsoleKind",
    "DiskSpec",
    "DomainSpec",
    "DriverSettings",
    "EventKind",
    "EventStream",
    "FileDisk",
    "GuestPower",
    "HostCapacity",
    "HostInventory",
    "HypervisorDriver",
    "IscsiDisk",
    "LifecycleEvent",
    "MigrationProgress",
    "NicInfo",
    "NicSpec",
    "SnapshotInfo",
    "StopOutcome",
    "VMInfo",
]

_STOP_POLL_INTERVAL = 0.1


class HypervisorDriver(abc.ABC):
    """One connection to one hypervisor host. Subclasses implement every abstract method; a
    missing one fails at instantiation. Construction does no I/O: call ``connect`` first."""

    #: The entry-point name the driver is registered under (``libvirt``, ``vsphere``...).
    name: str = ""

    def __init__(self, settings: DriverSettings) -> None:
        self._settings = settings
        self._events = EventHub()

    @property
    def settings(self) -> DriverSettings:
        return self._settings

    # -- capabilities ------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def capabilities(self) -> frozenset[Capability]:
        """The optional features this driver offers for its backend. May depend on the backend
        (a libvirt test host cannot migrate); final once ``connect`` has returned."""

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def _require(self, capability: Capability) -> None:
        if capability not in self.capabilities:
            raise UnsupportedOperation(
                f"the {self.name or type(self).__name__} driver at {self._settings.uri} "
                f"does not support {capability.value}"
            )

    # -- template images -----------------------------------------------------------------------

    #: The disk format (qemu-img's name) this hypervisor takes a template's image in; empty:
    #: none (a VM cannot be deployed from a template on it). libvirt opens the library's qcow2
    #: files itself (linked clones); drivers with ``IMPORT_IMAGE`` receive a copy.
    image_format = ""

    async def import_image(self, path: str, name: str) -> FileDisk:
        """Copy the local image file ``path`` (in :attr:`image_format`) to the host's own
        storage as the boot disk of the VM ``name``, and return the disk that ``define_vm``
        takes. Idempotent: the same ``name`` again replaces the copy. Capability
        ``IMPORT_IMAGE``; UnsupportedOperation otherwise. DriverError if the host refuses."""
        self._require(Capability.IMPORT_IMAGE)
        raise UnsupportedOperation(f"{type(self).__name__} declares import_image but has none")

    async def remove_image(self, name: str) -> None:
        """Remove the copy :meth:`import_image` made for ``name``; no-op if there is none (or
        the driver imports nothing). Call it once the VM is gone."""
        return None

    # -- connection --------------------------------------------------------------------------

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection and start delivering lifecycle events. Idempotent.

        Raises ``BackendUnavailable`` when the host cannot be reached or refuses the credentials.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop events (every open stream ends), release callbacks and close the connection.
        Idempotent; never raises for a connection that is already gone. Final: a closed driver
        does not connect again (``BackendUnavailable``); make a new one. That is also the way
        back from a lost connection, which every call reports as ``BackendUnavailable``."""

    # -- events ------------------------------------------------------------------------------

    def subscribe(self, maxsize: int = 1024) -> EventStream:
        """A stream of :class:`LifecycleEvent` for every VM on this host, from now on.

        Use as ``async with driver.subscribe() as events: async for event in events:``. Events
        are pushed by the hypervisor when the driver declares ``LIFECYCLE_EVENTS``, otherwise
        the driver polls. Events are hints for prompt reaction, not a log: a stream that falls
        behind drops its oldest events (counted in ``dropped``), and a connection loss loses
        events, so consumers also sweep ``list_vms`` now and then. Streams end at ``close``.
        Call it on the event loop that consumes the stream; events reach that loop from
        whatever thread the driver hears them on.
        """
        return self._events.subscribe(maxsize)

    def _publish(self, event: LifecycleEvent) -> None:
        """For drivers: deliver ``event`` to every stream. Callable from any thread."""
        self._events.publish(event)

    # -- host --------------------------------------------------------------------------------

    @abc.abstractmethod
    async def host_inventory(self) -> HostInventory:
        """The host's hardware and hypervisor: CPUs, memory, hypervisor type and version."""

    @abc.abstractmethod
    async def host_capacity(self) -> HostCapacity:
        """What is in use on the host now: vCPUs and memory of running and paused VMs."""

    # -- VMs: read ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def list_vms(self) -> list[VMInfo]:
        """Every VM defined on the host, in any power state, including VMs cloudcore did not
        create (so orphans can be found)."""

    @abc.abstractmethod
    async def get_vm(self, uuid: str) -> VMInfo:
        """The VM with this uuid. Raises ``NotFound``."""

    async def power_state(self, uuid: str) -> GuestPower:
        """The VM's power state now. Raises ``NotFound``."""
        return (await self.get_vm(uuid)).power

    # -- VMs: lifecycle ----------------------------------------------------------------------

    @abc.abstractmethod
    async def define_vm(self, spec: DomainSpec) -> VMInfo:
        """Create the VM's persistent definition, stopped, or replace the definition of the VM
        with the same uuid (a running VM picks the new definition up at its next start). Disk
        images must exist; they are referenced, never created or deleted by the driver.

        Raises ``Conflict`` when another VM already has ``spec.name``; ``UnsupportedOperation``
        for an iSCSI disk without ``ISCSI_DISKS``.
        """

    @abc.abstractmethod
    async def start_vm(self, uuid: str) -> None:
        """Power on a STOPPED or CRASHED VM. No-op when RUNNING. ``IllegalTransition`` when
        PAUSED (use ``unpause_vm``) or SUSPENDED (use ``resume_vm``)."""

    @abc.abstractmethod
    async def stop_vm(self, uuid: str, *, timeout: float) -> StopOutcome:
        """Power off: ask the guest to shut down, wait up to ``timeout`` seconds, then power off
        hard. ``timeout=0`` (or no ``GRACEFUL_STOP``) powers off at once; so does a PAUSED VM,
        whose guest cannot react. Returns how it ended; ``ALREADY_STOPPED`` when STOPPED or
        CRASHED. ``IllegalTransition`` when SUSPENDED (``destroy_vm`` discards a saved VM)."""

    @abc.abstractmethod
    async def reboot_vm(self, uuid: str, *, hard: bool = False) -> None:
        """Reboot a RUNNING VM: ask the guest (``hard=False``; a guest without an OS may ignore
        it) or reset the virtual hardware (``hard=True``). Needs ``REBOOT``.
        ``IllegalTransition`` in any other state."""

    @abc.abstractmethod
    async def pause_vm(self, uuid: str) -> None:
        """Stop the vCPUs of a RUNNING VM, keeping its memory. No-op when PAUSED. Needs
        ``PAUSE``. ``IllegalTransition`` in any other state."""

    @abc.abstractmethod
    async def unpause_vm(self, uuid: str) -> None:
        """Resume the vCPUs of a PAUSED VM. No-op when RUNNING. Needs ``PAUSE``.
        ``IllegalTransition`` in any other state."""

    @abc.abstractmethod
    async def suspend_vm(self, uuid: str) -> None:
        """Save the memory of a RUNNING or PAUSED VM to the host's disk and stop it; the VM then
        reads SUSPENDED. No-op when SUSPENDED. Needs ``SUSPEND``. ``IllegalTransition`` when
        STOPPED or CRASHED."""

    @abc.abstractmethod
    async def resume_vm(self, uuid: str) -> None:
        """Restore a SUSPENDED VM to RUNNING where it left off. No-op when RUNNING. Needs
        ``SUSPEND``. ``IllegalTransition`` in any other state."""

    @abc.abstractmethod
    async def destroy_vm(self, uuid: str) -> None:
        """Power off (hard) if needed and remove the VM's definition, saved state and snapshot
        metadata from the host. Disk images are left alone (volumes belong to storage drivers).
        Idempotent: no-op when the VM does not exist."""

    # -- VMs: changes ------------------------------------------------------------------------

    @abc.abstractmethod
    async def reconfigure_vm(
        self, uuid: str, *, vcpus: int | None = None, memory_mib: int | None = None
    ) -> VMInfo:
        """Change the vCPU count and/or memory. A STOPPED VM takes any size (``RECONFIGURE``;
        its maxima grow with it); a RUNNING or PAUSED VM changes live within its maxima
        (``LIVE_RECONFIGURE``), the definition too. Returns the VM as it is afterwards.
        ``IllegalTransition`` when live change is impossible (SUSPENDED, or beyond a maximum);
        ``InvalidRequest`` (a ValueError) for sizes below 1."""

    @abc.abstractmethod
    async def create_snapshot(self, uuid: str, name: str) -> SnapshotInfo:
        """Snapshot the VM (disks, and memory when it runs) under ``name``. Needs ``SNAPSHOT``.
        ``Conflict`` when the VM already has a snapshot of that name."""

    @abc.abstractmethod
    async def list_snapshots(self, uuid: str) -> list[SnapshotInfo]:
        """The VM's snapshots, oldest first. Needs ``SNAPSHOT``."""

    @abc.abstractmethod
    async def revert_snapshot(self, uuid: str, name: str) -> None:
        """Return the VM to the snapshot, including its power state then. Needs ``SNAPSHOT``.
        ``NotFound`` when there is no such snapshot."""

    @abc.abstractmethod
    async def delete_snapshot(self, uuid: str, name: str) -> None:
        """Delete the snapshot. Needs ``SNAPSHOT``. No-op when there is no such snapshot."""

    @abc.abstractmethod
    async def attach_volume(self, uuid: str, disk: DiskSpec) -> str:
        """Attach a disk to the VM, live when it runs and in its definition; returns the device
        name the hypervisor gave it (``vdb``). ``disk.serial`` is the volume id and is required;
        attaching a serial that is attached already returns its device. A disk with a
        ``boot_order`` attached to a stopped VM becomes one of its boot devices in that order
        (the VM then boots by device order only); to a running VM it attaches without one.
        Needs ``ATTACH_VOLUME`` (and ``ISCSI_DISKS`` for an iSCSI disk)."""

    @abc.abstractmethod
    async def detach_volume(self, uuid: str, serial: str) -> None:
        """Detach the disk whose serial is ``serial``, live and from the definition. No-op when
        no such disk is attached. Needs ``ATTACH_VOLUME``."""

    async def resize_volume(self, uuid: str, serial: str, size_bytes: int) -> None:
        """Tell a running VM that its disk whose serial is ``serial`` is now ``size_bytes``
        (the storage grew it). No-op for a VM that does not run (it reads the size when it
        starts). ``NotFound`` when no such disk is attached. Needs ``RESIZE_VOLUME``; optional,
        so not abstract: a driver that does not declare it inherits this refusal."""
        self._require(Capability.RESIZE_VOLUME)
        raise UnsupportedOperation(f"{self.name} declares resize_volume but does not implement it")

    # -- VMs: NICs ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def list_nics(self, uuid: str) -> list[NicInfo]:
        """The VM's NICs in its definition, in device order. Raises ``NotFound``."""

    @abc.abstractmethod
    async def attach_nic(self, uuid: str, nic: NicSpec) -> None:
        """Add a NIC to the VM, live when it runs and in its definition. ``nic.mac`` is
        required; a NIC with that MAC already there makes this a no-op. Needs ``HOTPLUG_NIC``
        (a stopped VM's NICs are changed by ``define_vm``)."""

    @abc.abstractmethod
    async def detach_nic(self, uuid: str, mac: str) -> None:
        """Remove the NIC with MAC ``mac``, live and from the definition. No-op when there is
        none. Needs ``HOTPLUG_NIC``."""

    @abc.abstractmethod
    async def migrate_vm(
        self,
        uuid: str,
        destination: DriverSettings,
        *,
        live: bool = True,
        progress: Callable[[MigrationProgress], None] | None = None,
        volumes: Sequence[IscsiDisk] = (),
    ) -> None:
        """Move the VM to the host ``destination`` names (same driver). Needs ``MIGRATE``.

        ``live``: the VM runs throughout and runs on the destination afterwards (RUNNING or
        PAUSED only, else ``IllegalTransition``); not live: a STOPPED VM's definition moves
        (cold; ``IllegalTransition`` when it runs). On return the VM is defined on the
        destination and gone from here. File disks are referenced at the same paths on the
        destination; a driver copies those its hosts do not share (libvirt: see its
        ``shared_paths`` setting).

        ``volumes``: the VM's attached iSCSI disks as the destination opens them (its
        initiator name, the export's CHAP credentials; matched by ``serial``), the storage
        having admitted the destination's initiator already. Needs ``ISCSI_DISKS`` when any.

        ``progress``, when given, is called on the event loop with what the hypervisor's job
        info shows, every fraction of a second while the migration runs (a simulated migration
        reports once, ``simulated`` set). Cancelling the call aborts the migration: it returns
        only once the hypervisor has given up, the VM still on this host, running if it was.
        Raises ``NotFound`` (no such VM here), ``Conflict`` (the destination is this host, or
        already has the VM), ``DriverError`` (the hypervisor failed or aborted it; the VM stays
        here).
        """

    # -- consoles ----------------------------------------------------------------------------

    async def console(self, uuid: str, kind: ConsoleKind = ConsoleKind.VNC) -> ConsoleEndpoint:
        """Where the VM's graphical (VNC) or serial console is now. Needs ``CONSOLE``: a
        driver that declares it overrides this. The endpoint changes when the VM restarts, so
        ask again each time. ``IllegalTransition`` when the VM is not RUNNING or PAUSED (no
        process, no console); ``UnsupportedOperation`` as well when this VM was defined
        without that console."""
        self._require(Capability.CONSOLE)
        raise UnsupportedOperation(f"{type(self).__name__} declares consoles but has none")

    # -- host power ------------------------------------------------------------------------

    async def set_host_power(self, standby: bool) -> str:
        """Put the host to standby (``standby``) or wake it; returns how it was done, in words
        (a simulated backend says so). Needs ``HOST_POWER``: a driver that declares it
        overrides this. The caller makes sure the host runs no VM before a standby. Idempotent:
        a host already in the asked state is left as it is. Returns once the backend accepted
        the change; the host may take a while more to be usable after a wake."""
        self._require(Capability.HOST_POWER)
        raise UnsupportedOperation(f"{type(self).__name__} declares host power but has none")

    # -- helpers for implementations ---------------------------------------------------------

    async def _stop_with_deadline(
        self,
        uuid: str,
        timeout: float,
        request_shutdown: Callable[[], Awaitable[None]],
        power_off: Callable[[], Awaitable[None]],
    ) -> StopOutcome:
        """The common shape of ``stop_vm``: check the state, ask the guest, poll the power state
        until the deadline, then power off hard."""
        power = await self.power_state(uuid)
        if power in (GuestPower.STOPPED, GuestPower.CRASHED):
            return StopOutcome.ALREADY_STOPPED
        if power is GuestPower.SUSPENDED:
            raise IllegalTransition(f"VM {uuid} is suspended; destroy it to discard its state")
        graceful = (
            timeout > 0 and power is GuestPower.RUNNING and self.supports(Capability.GRACEFUL_STOP)
        )
        if graceful:
            await request_shutdown()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if await self.power_state(uuid) in (GuestPower.STOPPED, GuestPower.CRASHED):
                    return StopOutcome.GRACEFUL
                await asyncio.sleep(min(_STOP_POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
        await power_off()
        return StopOutcome.FORCED
