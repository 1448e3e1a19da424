"""Migration of a placed VM to another host of its datacenter: the parts the VM actor runs.

1. :func:`prepare`, before any task exists: choose the target (the scheduler's filters and
   weighers, other than the VM's host) or validate the one asked for (same datacenter, same
   hypervisor, ENABLED and HEALTHY, its driver declares MIGRATE as the source's does), then
   hold the VM's size on it (``Store.claim_host_capacity``), so nothing moves before the
   capacity is there. A refusal raises; nothing is held then.
2. :func:`drive`, the task's ``migrate`` step: the driver's migration, its progress (bytes and
   percent from the hypervisor's job info) written into the step as it comes. The step's
   deadline cancels it, which aborts the migration: the VM stays on its host.
3. :func:`settle`: success moves the VM's record and claim to the target in one transaction
   (``claims.move`` with the hold counted), failure gives the hold back. Then the VM actor
   hands itself over: the target host's actor adopts the VM, the source's forgets it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from actors import claims
from actors.journal import Journal
from actors.messages import AdoptVM, Forget, GetCapabilities
from actors.operations import MigrateParams
from actors.scheduler.messages import HostUpdated, SchedulerMessage, SelectHosts
from actors.services import Services, driver_settings
from cloudcore.errors import (
    CloudcoreError,
    Conflict,
    InvalidRequest,
    NotFound,
    NoValidHost,
    UnsupportedOperation,
    describe,
)
from cloudcore.logging import get_logger
from cloudcore.runtime import ActorRef, ActorSystem
from cloudcore.store.records import VM, AdminState, Host, HostHealth, OutboxEvent, VMState
from hypervisor_drivers.base import Capability, HypervisorDriver, MigrationProgress

__all__ = ["MigrationPlan", "drive", "hand_over", "prepare", "release_hold", "settle"]

_log = get_logger("actors.migration")


class MigrationPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Where a VM goes and how; the target's capacity for it is held."""

    source_id: str
    target: Host
    live: bool

    def task_data(self) -> dict[str, Any]:
        return {"source": self.source_id, "target": self.target.id, "live": self.live}


def _host_path(host: Host) -> str:
    return f"/user/dc/{host.datacenter_id}/{host.id}"


async def prepare(
    services: Services,
    system: ActorSystem,
    vm: VM,
    params: MigrateParams,
    driver: HypervisorDriver,
    view: ActorRef[SchedulerMessage] | None,
) -> MigrationPlan:
    """Choose or check the target and hold the VM's size there. Raises UnsupportedOperation
    (a driver cannot migrate), InvalidRequest (a target of another datacenter or hypervisor,
    or the VM's own host), NotFound, Conflict (the target takes no VMs now), InsufficientCapacity
    (the target asked for is full), NoValidHost (no target fits)."""
    assert vm.host_id is not None
    if not driver.supports(Capability.MIGRATE):
        raise UnsupportedOperation(f"host {vm.host_id}'s driver cannot migrate VMs")
    source = await services.store.get(Host, vm.host_id)
    if params.host_id is not None:
        target = await _check_target(services, system, vm, source, params.host_id)
        return await _hold(services, vm, source, target, view)
    if view is None:
        raise NoValidHost(f"no scheduler to choose a target for VM {vm.id}")
    refused: list[str] = []
    for host_id in await view.ask(SelectHosts(vm=vm)):
        try:
            target = await _check_target(services, system, vm, source, host_id)
            return await _hold(services, vm, source, target, view)
        except CloudcoreError as exc:
            refused.append(f"{host_id}: {describe(exc)}")
    raise NoValidHost(f"no target for VM {vm.id} can take it: {'; '.join(refused)}")


async def _check_target(
    services: Services, system: ActorSystem, vm: VM, source: Host, host_id: str
) -> Host:
    if host_id == source.id:
        raise InvalidRequest(f"VM {vm.id} is on host {host_id} already")
    target = await services.store.get(Host, host_id)
    if target.datacenter_id != vm.datacenter_id:
        raise InvalidRequest(f"host {host_id} is not in VM {vm.id}'s datacenter")
    if target.hypervisor != source.hypervisor:
        raise InvalidRequest(
            f"host {host_id} runs {target.hypervisor}, VM {vm.id} is on {source.hypervisor}"
        )
    if target.admin_state is not AdminState.ENABLED or target.health is not HostHealth.HEALTHY:
        raise Conflict(f"host {host_id} is {target.admin_state}, {target.health}: it takes no VMs")
    try:
        ref = system.lookup(_host_path(target))
    except NotFound:
        raise Conflict(f"host {host_id} is not managed by this node") from None
    if Capability.MIGRATE.value not in await ref.ask(GetCapabilities()):
        raise UnsupportedOperation(f"host {host_id}'s driver cannot take migrated VMs")
    return target


async def _hold(
    services: Services,
    vm: VM,
    source: Host,
    target: Host,
    view: ActorRef[SchedulerMessage] | None,
) -> MigrationPlan:
    held = await services.store.claim_host_capacity(
        target.id, cpus=vm.spec.cpus, memory_mib=vm.spec.memory_mib
    )
    if view is not None:
        view.tell(HostUpdated(host=held))
    return MigrationPlan(source_id=source.id, target=held, live=vm.state is VMState.RUNNING)


async def release_hold(
    services: Services, vm: VM, plan: MigrationPlan, view: ActorRef[SchedulerMessage] | None
) -> None:
    """Give back the capacity :func:`prepare` held on the target."""
    try:
        host = await services.store.release_host_capacity(
            plan.target.id, cpus=vm.spec.cpus, memory_mib=vm.spec.memory_mib
        )
    except CloudcoreError as exc:
        _log.error("migration.hold_leaked", vm_id=vm.id, host_id=plan.target.id, error=str(exc))
        return
    if view is not None:
        view.tell(HostUpdated(host=host))


class _Progress:
    """Takes the driver's samples on the event loop; writes the latest into the step, one
    write at a time (samples arriving during a write are folded into the next one)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._latest: MigrationProgress | None = None
        self._written: MigrationProgress | None = None
        self._wake = asyncio.Event()
        self._done = False

    def __call__(self, sample: MigrationProgress) -> None:
        self._latest = sample
        self._wake.set()

    async def pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            latest = self._latest
            if latest is not None and latest is not self._written:
                self._written = latest
                await self._journal.report(_progress_data(latest))
            if self._done:
                return

    def close(self) -> None:
        self._done = True
        self._wake.set()


def _progress_data(sample: MigrationProgress) -> dict[str, Any]:
    return {
        "percent": sample.percent,
        "bytes_processed": sample.data_processed,
        "bytes_total": sample.data_total,
        "bytes_remaining": sample.data_remaining,
        "elapsed_ms": sample.elapsed_ms,
        "simulated": sample.simulated,
    }


async def drive(
    driver: HypervisorDriver, vm_id: str, plan: MigrationPlan, journal: Journal
) -> None:
    """The driver's migration, its progress written into the running step."""
    progress = _Progress(journal)
    pump = asyncio.create_task(progress.pump())
    try:
        await driver.migrate_vm(
            vm_id, driver_settings(plan.target), live=plan.live, progress=progress
        )
    finally:
        progress.close()
        try:
            await asyncio.shield(pump)
        except Exception as exc:  # progress is a hint: a failed write does not fail the move
            _log.warning("migration.progress_lost", vm_id=vm_id, error=describe(exc))


async def settle(
    services: Services,
    vm: VM,
    plan: MigrationPlan,
    view: ActorRef[SchedulerMessage] | None,
    events: list[OutboxEvent],
    **changes: Any,
) -> VM:
    """The VM migrated: its record (``changes``) and claim move to the target, the hold
    counted, in one transaction."""
    moved = OutboxEvent(
        type="vm.migrated",
        subject=f"vm/{vm.id}",
        tenant_id=vm.tenant_id,
        data={"source": plan.source_id, "target": plan.target.id, "live": plan.live},
    )
    after = await claims.move(
        services.store,
        vm,
        plan.target.id,
        view,
        target_held=True,
        events=[*events, moved],
        **changes,
    )
    if view is not None:  # the view counted the hold, then the claim again: the store's truth
        view.tell(HostUpdated(host=await services.store.get(Host, plan.target.id)))
    return after


async def hand_over(system: ActorSystem, vm: VM, source: ActorRef[Any] | None) -> None:
    """Run the VM's actor under its new host's actor, then stop the one under the old host."""
    target = system.lookup(f"/user/dc/{vm.datacenter_id}/{vm.host_id}")
    await target.ask(AdoptVM(vm=vm))
    if source is not None:
        source.tell(Forget(vm_id=vm.id))
