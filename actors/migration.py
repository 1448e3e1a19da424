"""Migration of a placed VM to another host of its datacenter: the parts the VM actor runs.

1. :func:`prepare`, before any task exists: choose the target (the scheduler's filters and
   weighers, other than the VM's host) or validate the one asked for (same datacenter, same
   hypervisor, ENABLED and HEALTHY, its driver declares MIGRATE as the source's does). A
   refusal raises; nothing is written then.
2. :func:`hold`, once the task exists: the VM's size is claimed on the target in the same
   transaction that turns the VM MIGRATING under the task (``Store.hold_for_vm``), so nothing
   moves before the capacity is there, and the hold is never without a task that names it (the
   task's data says where and how much: ``hold``).
3. :func:`drive`, the task's ``migrate`` step: the VM's iSCSI volumes' exports admit the
   target host too (:mod:`actors.migration_volumes`), then the driver's migration (its disks
   copied when the hosts do not share them), its progress (bytes and
   percent from the hypervisor's job info) written into the step as it comes. An operator's
   abort (:meth:`Migration.abort`) or the deadline cancels it, which aborts the migration on
   the hypervisor: the VM stays on its host, running if it was.
4. :func:`settle` (it moved: record and claim to the target, the hold counted, one
   transaction) or :func:`give_back` (it did not: the hold released with the VM's change, one
   transaction), so a hold ends exactly once. Then the VM actor hands itself over: the target
   host's actor adopts the VM, the source's forgets it.

What a crash cut short is settled from what both hypervisors show: :mod:`actors.migration_recovery`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from actors import claims, migration_volumes
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
from cloudcore.store import Store
from cloudcore.store.records import VM, AdminState, Host, HostHealth, OutboxEvent, Task, VMState
from hypervisor_drivers.base import Capability, HypervisorDriver, MigrationProgress

__all__ = [
    "Migration",
    "MigrationAborted",
    "MigrationPlan",
    "drive",
    "give_back",
    "hand_over",
    "hold",
    "prepare",
    "settle",
]

_log = get_logger("actors.migration")


class MigrationAborted(CloudcoreError):
    """An operator aborted the migration; the VM stays where it was."""


class MigrationPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Where a VM goes and how, as its task's data records it."""

    source_id: str
    target_id: str
    live: bool
    cpus: int  # the hold on the target: the VM's size
    memory_mib: int

    def task_data(self) -> dict[str, Any]:
        hold = {"host": self.target_id, "cpus": self.cpus, "memory_mib": self.memory_mib}
        return {"source": self.source_id, "target": self.target_id, "live": self.live, "hold": hold}

    @classmethod
    def of_task(cls, task: Task) -> MigrationPlan | None:
        """The plan a migration task recorded (None: it recorded none, or is no migration)."""
        data, hold = task.data, task.data.get("hold")
        if task.kind != "vm.migrate" or not isinstance(hold, dict) or "target" not in data:
            return None
        return cls(
            source_id=str(data["source"]),
            target_id=str(data["target"]),
            live=bool(data["live"]),
            cpus=int(hold["cpus"]),
            memory_mib=int(hold["memory_mib"]),
        )


class Migration:
    """The migration a VM actor runs now: its plan, and the switch an operator's abort flips."""

    def __init__(self, plan: MigrationPlan, system: ActorSystem | None = None) -> None:
        self.plan = plan
        self.system = system  # where the VM's volumes' pools are (None: volumes stay put)
        self.reason: str | None = None
        self._aborted = asyncio.Event()

    def abort(self, reason: str) -> None:
        """Ask the running migration to stop (the first reason given is kept)."""
        if self.reason is None:
            self.reason = reason
        self._aborted.set()

    async def aborted(self) -> str:
        await self._aborted.wait()
        return self.reason or "aborted"


def _host_path(host_id: str, datacenter_id: str) -> str:
    return f"/user/dc/{datacenter_id}/{host_id}"


async def prepare(
    services: Services,
    system: ActorSystem,
    vm: VM,
    params: MigrateParams,
    driver: HypervisorDriver,
    view: ActorRef[SchedulerMessage] | None,
) -> MigrationPlan:
    """Choose or check the target. Raises UnsupportedOperation (a driver cannot migrate),
    InvalidRequest (a target of another datacenter or hypervisor, or the VM's own host),
    NotFound, Conflict (the target takes no VMs now), NoValidHost (no target fits)."""
    assert vm.host_id is not None
    if not driver.supports(Capability.MIGRATE):
        raise UnsupportedOperation(f"host {vm.host_id}'s driver cannot migrate VMs")
    source = await services.store.get(Host, vm.host_id)
    if params.host_id is not None:
        target = await _check_target(services, system, vm, source, params.host_id)
        return _plan(vm, source, target)
    if view is None:
        raise NoValidHost(f"no scheduler to choose a target for VM {vm.id}")
    refused: list[str] = []
    for host_id in await view.ask(SelectHosts(vm=vm)):
        try:
            target = await _check_target(services, system, vm, source, host_id)
            return _plan(vm, source, target)
        except CloudcoreError as exc:
            refused.append(f"{host_id}: {describe(exc)}")
    raise NoValidHost(f"no target for VM {vm.id} can take it: {'; '.join(refused)}")


def _plan(vm: VM, source: Host, target: Host) -> MigrationPlan:
    return MigrationPlan(
        source_id=source.id,
        target_id=target.id,
        live=vm.state is VMState.RUNNING,
        cpus=vm.spec.cpus,
        memory_mib=vm.spec.memory_mib,
    )


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
        ref = system.lookup(_host_path(target.id, target.datacenter_id))
    except NotFound:
        raise Conflict(f"host {host_id} is not managed by this node") from None
    if Capability.MIGRATE.value not in await ref.ask(GetCapabilities()):
        raise UnsupportedOperation(f"host {host_id}'s driver cannot take migrated VMs")
    if target.cpus - target.cpus_used < vm.spec.cpus or (
        target.memory_mib - target.memory_mib_used < vm.spec.memory_mib
    ):
        raise Conflict(
            f"host {host_id} has {target.cpus - target.cpus_used} CPUs and "
            f"{target.memory_mib - target.memory_mib_used} MiB free, VM {vm.id} needs "
            f"{vm.spec.cpus} and {vm.spec.memory_mib}"
        )
    return target


async def hold(
    store: Store,
    vm: VM,
    plan: MigrationPlan,
    view: ActorRef[SchedulerMessage] | None,
    events: list[OutboxEvent],
    **changes: Any,
) -> VM:
    """Claim the VM's size on the target with ``changes`` to the VM (MIGRATING under its task),
    in one transaction. Raises InsufficientCapacity (the target filled up meanwhile),
    VersionConflict; then nothing changed."""
    after, target = await store.hold_for_vm(
        vm.id, plan.target_id, expected_version=vm.version, events=events, **changes
    )
    if view is not None:
        view.tell(HostUpdated(host=target))
    return after


async def give_back(
    store: Store,
    vm: VM,
    plan: MigrationPlan,
    view: ActorRef[SchedulerMessage] | None,
    events: list[OutboxEvent],
    **changes: Any,
) -> VM:
    """The migration did not happen: release the hold with ``changes`` to the VM, in one
    transaction."""
    after, target = await store.release_vm_hold(
        vm.id, plan.target_id, expected_version=vm.version, events=events, **changes
    )
    if view is not None:
        view.tell(HostUpdated(host=target))
    return after


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
    services: Services, driver: HypervisorDriver, vm_id: str, run: Migration, journal: Journal
) -> None:
    """The driver's migration, its progress written into the running step. Raises
    MigrationAborted once an abort has stopped it (the hypervisor gave up first)."""
    target = await services.store.get(Host, run.plan.target_id)
    volumes = []
    if run.system is not None:  # the target's initiator let in first (actors.migration_volumes)
        volumes = await migration_volumes.admit_target(run.system, services.store, vm_id, target.id)
    progress = _Progress(journal)
    pump = asyncio.create_task(progress.pump())
    move = asyncio.create_task(
        driver.migrate_vm(
            vm_id, driver_settings(target), live=run.plan.live, progress=progress, volumes=volumes
        )
    )
    abort = asyncio.create_task(run.aborted())
    try:
        await asyncio.wait({move, abort}, return_when=asyncio.FIRST_COMPLETED)
        if not move.done():
            move.cancel()  # the driver aborts the job and returns once the hypervisor gave up
            await asyncio.gather(move, return_exceptions=True)
            if move.cancelled():
                raise MigrationAborted(f"migration of VM {vm_id} aborted: {run.reason}")
        await move  # done: its outcome, even when an abort came too late to stop it
    finally:
        abort.cancel()
        if not move.done():  # the step's deadline (or a stop) cancelled us: abort the move too
            move.cancel()
            await asyncio.shield(asyncio.gather(move, return_exceptions=True))
        progress.close()
        try:
            await asyncio.shield(pump)
        except Exception as exc:  # progress is a hint: a failed write does not fail the move
            _log.warning("migration.progress_lost", vm_id=vm_id, error=describe(exc))


async def settle(
    store: Store,
    vm: VM,
    plan: MigrationPlan,
    view: ActorRef[SchedulerMessage] | None,
    events: list[OutboxEvent],
    **changes: Any,
) -> VM:
    """The VM migrated: its record (``changes``) and claim move to the target, the hold
    counted, in one transaction. Raises VersionConflict, Conflict; then nothing changed."""
    moved = OutboxEvent(
        type="vm.migrated",
        subject=f"vm/{vm.id}",
        tenant_id=vm.tenant_id,
        data={"source": plan.source_id, "target": plan.target_id, "live": plan.live},
    )
    after = await claims.move(
        store,
        vm,
        plan.target_id,
        view,
        target_held=True,
        events=[*events, moved],
        **changes,
    )
    if view is not None:  # the view counted the hold, then the claim again: the store's truth
        view.tell(HostUpdated(host=await store.get(Host, plan.target_id)))
    return after


async def hand_over(system: ActorSystem, vm: VM, source: ActorRef[Any] | None) -> None:
    """Run the VM's actor under its new host's actor, then stop the one under the old host."""
    target = system.lookup(f"/user/dc/{vm.datacenter_id}/{vm.host_id}")
    await target.ask(AdoptVM(vm=vm))
    if source is not None:
        source.tell(Forget(vm_id=vm.id))
