"""The host actor (Abiquo's node collector): one per hypervisor host.

It holds the driver connection and reconnects with backoff; keeps the host's health (what the
monitor sees) apart from its admin state (what the operator allows); owns the actors of the VMs
placed on the host; forwards the hypervisor's lifecycle events to them; and sweeps the host
periodically, because events are hints and the sweep is the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, assert_never

from actors.messages import (
    AdoptVM,
    AttachDisk,
    DetachDisk,
    Forget,
    GetCapabilities,
    GetConsole,
    GetHost,
    GetVM,
    ListSnapshots,
    Observation,
    PowerObserved,
    PowerOf,
    ResizeDisk,
    SetHostPower,
    Snapshot,
    Sweep,
    SweepReport,
)
from actors.paging import all_records
from actors.registration import update_host
from actors.services import DriverSlot, Services
from actors.supervision import DOMAIN_STRATEGY
from actors.vm import VMActor, VMMessage
from cloudcore.errors import BackendUnavailable, NotFound, describe
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, Message
from cloudcore.store.records import VM, Host, HostHealth, OutboxEvent, VMState
from hypervisor_drivers.base import HypervisorDriver

if TYPE_CHECKING:
    from actors.scheduler.messages import SchedulerMessage

__all__ = ["HostActor"]

_log = get_logger("actors.host")
_MAX_RECONNECT_DELAY = 30.0
#: How long a stopping host actor may take to record that the host is no longer managed.
_STOP_RECORD_TIMEOUT = 5.0
#: VM states in which the store says a VM exists on its hypervisor.
_DEFINED_STATES = frozenset(
    {
        VMState.STOPPED,
        VMState.RUNNING,
        VMState.PAUSED,
        VMState.SUSPENDED,
        VMState.ERROR,
        VMState.UNKNOWN,
    }
)


class _Connect(Message, frozen=True, kw_only=True):
    pass


HostMessage = (
    AdoptVM
    | AttachDisk
    | DetachDisk
    | ResizeDisk
    | Forget
    | GetCapabilities
    | GetConsole
    | GetHost
    | ListSnapshots
    | PowerObserved
    | PowerOf
    | SetHostPower
    | Sweep
    | _Connect
)


class HostActor(Actor[HostMessage]):
    supervisor_strategy = DOMAIN_STRATEGY

    def __init__(
        self,
        services: Services,
        host: Host,
        driver: HypervisorDriver,
        on_update: ActorRef[SchedulerMessage] | None = None,
    ) -> None:
        self.services = services
        self.host = host
        self.slot = DriverSlot(driver)
        self.on_update = on_update  # the scheduler, told of health changes
        self.connected = False
        self.delay = services.settings.reconnect_delay
        self.pump: asyncio.Task[None] | None = None
        self.missing: dict[str, int] = {}
        self.adopted = False

    async def started(self) -> None:
        self.context.self_ref.tell(_Connect())
        self.context.schedule_periodic("sweep", self.services.settings.sweep_interval, Sweep())

    async def stopping(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
        try:
            await self.driver.close()
        finally:
            await self._unmanaged()

    async def _unmanaged(self) -> None:
        """No actor manages the host once this one stops: it is not healthy (the scheduler
        places nothing there) until an actor connects to it again. Best effort: a store that
        is down or closing must not hold the stop up."""
        try:
            async with asyncio.timeout(_STOP_RECORD_TIMEOUT):
                await self._set_health(HostHealth.UNREACHABLE)
        except Exception as exc:
            _log.warning("host.health_not_recorded", host_id=self.host.id, error=describe(exc))

    @property
    def driver(self) -> HypervisorDriver:
        return self.slot.current

    async def receive(self, message: HostMessage) -> Any:
        match message:
            case _Connect():
                await self._connect()
            case AdoptVM(vm=vm):
                return self._adopt(vm)
            case Forget(vm_id=vm_id):
                if (child := self.context.child(vm_id)) is not None:
                    self.context.stop(child)
            case GetHost():
                return await self._fresh()
            case AttachDisk(vm_id=vm_id, disk=disk):
                self._require_connected()
                return await self.driver.attach_volume(vm_id, disk)
            case ResizeDisk(vm_id=vm_id, serial=serial, size_bytes=size):
                self._require_connected()
                await self.driver.resize_volume(vm_id, serial, size)
            case DetachDisk(vm_id=vm_id, serial=serial):
                self._require_connected()
                try:
                    await self.driver.detach_volume(vm_id, serial)
                except NotFound:  # no such VM on the hypervisor: nothing holds the disk
                    return None
            case GetCapabilities():
                self._require_connected()
                return sorted(c.value for c in self.driver.capabilities)
            case ListSnapshots(vm_id=vm_id):
                return await self._snapshots(vm_id)
            case GetConsole(vm_id=vm_id, kind=kind):
                self._require_connected()
                return await self.driver.console(vm_id, kind)
            case PowerObserved(vm_id=vm_id):
                # Not ours (None): the sweep reports the orphan.
                if (child := self.context.child(vm_id)) is not None:
                    child.tell(message)
            case PowerOf(vm_id=vm_id):
                return await self._power_of(vm_id)
            case SetHostPower(standby=standby):
                self._require_connected()
                return await self.driver.set_host_power(standby)
            case Sweep():
                return await self._sweep()
            case _:
                assert_never(message)
        return None

    async def _power_of(self, vm_id: str) -> Any:
        self._require_connected()
        try:
            return await self.driver.power_state(vm_id)
        except NotFound:
            return None

    async def _snapshots(self, vm_id: str) -> list[Snapshot]:
        self._require_connected()
        return [
            Snapshot(name=s.name, created_at=s.created_at, power=s.power.value)
            for s in await self.driver.list_snapshots(vm_id)
        ]

    # ----------------------------------------------------------------- connection

    def _require_connected(self) -> None:
        if not self.connected:
            raise BackendUnavailable(f"host {self.host.id} is not connected")

    async def _connect(self) -> None:
        if self.connected:
            return
        try:
            await self.driver.connect()
        except Exception as exc:
            await self._set_health(HostHealth.UNREACHABLE)
            _log.warning(
                "host.connect_failed",
                host_id=self.host.id,
                error=describe(exc),
                retry_in=self.delay,
            )
            self.context.schedule_once("connect", self.delay, _Connect())
            self.delay = min(self.delay * 2, _MAX_RECONNECT_DELAY)
            return
        self.connected = True
        self.delay = self.services.settings.reconnect_delay
        self.pump = asyncio.create_task(self._pump_events())
        await self._set_health(HostHealth.HEALTHY)
        _log.info("host.connected", host_id=self.host.id, uri=self.driver.settings.uri)
        if not self.adopted:
            await self._adopt_stored()
        await self._sweep()

    async def _lost(self, error: str) -> None:
        if not self.connected:
            return
        self.connected = False
        _log.warning("host.disconnected", host_id=self.host.id, error=error)
        if self.pump is not None:
            self.pump.cancel()
        with contextlib.suppress(Exception):
            await self.driver.close()
        self.slot.current = self.services.driver_factory(self.host)  # connected afresh below
        await self._set_health(HostHealth.UNREACHABLE)
        self.context.self_ref.tell(_Connect())

    async def _pump_events(self) -> None:
        """Forward the hypervisor's events to the VM actors, through this actor's mailbox."""
        ref = self.context.self_ref
        async with self.driver.subscribe() as events:
            async for event in events:
                if event.power is not None:
                    ref.tell(
                        PowerObserved(
                            vm_id=event.vm_uuid, power=event.power, source=Observation.EVENT
                        )
                    )

    async def _set_health(self, health: HostHealth) -> None:
        if self.host.health is health:
            return
        if self.host.health is HostHealth.FENCED and health is HostHealth.UNREACHABLE:
            return  # fenced by HA (confirmed off): so it stays until it answers again
        changed = OutboxEvent(
            type="host.health_changed", subject=f"host/{self.host.id}", data={"health": str(health)}
        )
        self.host = await update_host(
            self.services.store,
            self.host,
            events=[changed],
            health=health,
            observed_at=datetime.now(UTC),
        )
        if self.on_update is not None:
            from actors.scheduler.messages import HostUpdated

            self.on_update.tell(HostUpdated(host=self.host))

    async def _fresh(self) -> Host:
        """The host as the store has it now: its claims change with every placement, resize
        and release, none of which goes through this actor."""
        host = await self.services.store.get(Host, self.host.id)
        if host.version >= self.host.version:
            self.host = host
        return self.host

    # ----------------------------------------------------------------- VMs

    def _adopt(self, vm: VM) -> ActorRef[VMMessage]:
        child: ActorRef[VMMessage] | None = self.context.child(vm.id)
        if child is not None:
            return child
        return self.context.spawn(VMActor, self.services, vm, self.slot, self.on_update, name=vm.id)

    async def _adopt_stored(self) -> None:
        async for vm in all_records(self.services.store, VM, {"host_id": self.host.id}):
            if vm.state is not VMState.DELETED:
                self._adopt(vm)
        self.adopted = True

    async def _sweep(self) -> SweepReport:
        nothing = SweepReport(
            host_id=self.host.id, orphans_on_hypervisor=[], missing_on_hypervisor=[]
        )
        if not self.connected:
            return nothing
        try:
            seen = {vm.uuid: vm for vm in await self.driver.list_vms()}
        except Exception as exc:
            await self._lost(describe(exc))
            return nothing
        # The VM actors by their names (VM ids), through their refs: a snapshot, as children
        # may stop while the asks below wait.
        ours: dict[str, ActorRef[VMMessage]] = {ref.name: ref for ref in self.context.children}
        for vm_id, ref in ours.items():
            info = seen.get(vm_id)
            ref.tell(
                PowerObserved(
                    vm_id=vm_id, power=info.power if info else None, source=Observation.SWEEP
                )
            )
        missing = []
        for vm_id, ref in ours.items():
            if vm_id in seen:
                self.missing.pop(vm_id, None)
                continue
            vm: VM = await ref.ask(GetVM())
            if vm.state in _DEFINED_STATES and vm.task_id is None:
                self.missing[vm_id] = self.missing.get(vm_id, 0) + 1
                if self.missing[vm_id] >= 2:
                    missing.append(vm_id)
        orphans = sorted(uuid for uuid in seen if uuid not in ours)
        if orphans or missing:
            _log.warning("host.drift", host_id=self.host.id, orphans=orphans, missing=missing)
        return SweepReport(
            host_id=self.host.id,
            orphans_on_hypervisor=orphans,
            missing_on_hypervisor=sorted(missing),
        )
