"""The VM actor's part of mobility: of a migration (:mod:`actors.migration` holds the steps
themselves), the hold taken as the VM turns MIGRATING, the end written where the VM is, and the
settling of a migration a crash cut short from what both hypervisors show; and its HA setting
(:mod:`actors.ha` restarts HA VMs of a failed host)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from actors import migration_recovery, migration_volumes, monitor
from actors.guest import to_power
from actors.journal import Journal
from actors.lifecycle import STABLE
from actors.messages import SetHA, VMChange
from actors.migration import Migration, MigrationPlan, give_back, hand_over, hold, settle
from actors.scheduler.messages import SchedulerMessage
from actors.services import Services
from cloudcore.errors import CloudcoreError, Conflict, describe
from cloudcore.logging import get_logger
from cloudcore.runtime import ActorContext, ActorRef
from cloudcore.store.records import VM, OutboxEvent, PowerState, Task, TaskState, VMState
from hypervisor_drivers.base import HypervisorDriver

__all__ = ["MobilitySteps"]

_log = get_logger("actors.vm")


class MobilitySteps:
    """Mixed into the VM actor, which provides what is declared here."""

    services: Services
    vm: VM
    view: ActorRef[SchedulerMessage] | None
    migration: Migration | None

    if TYPE_CHECKING:
        context: ActorContext[Any]

        @property
        def driver(self) -> HypervisorDriver: ...

        async def _commit(
            self,
            changes: dict[str, Any],
            write: Callable[[VM, list[OutboxEvent]], Awaitable[VM]],
        ) -> None: ...

    async def _set_ha(self, message: SetHA) -> VM:
        if self.vm.task_id is not None or self.vm.state not in STABLE:
            raise Conflict(f"VM {self.vm.id} is {self.vm.state}: set HA once it is at rest")
        spec = msgspec.structs.replace(self.vm.spec, ha=message.ha, ha_priority=message.priority)
        await self._commit(
            {},
            lambda vm, events: self.services.store.resize_vm(
                vm.id, spec, expected_version=vm.version, events=events
            ),
        )
        return self.vm

    async def _hold(self, journal: Journal, plan: MigrationPlan, begun: VMChange) -> None:
        """Hold the VM's size on the target as it turns MIGRATING; a refusal ends the task."""
        changes = begun.fields()
        try:
            await self._commit(
                changes,
                lambda vm, events: hold(
                    self.services.store, vm, plan, self.view, events, **changes
                ),
            )
        except CloudcoreError as exc:
            await journal.finish(TaskState.FAILED, describe(exc))
            raise
        self.migration = Migration(plan, self.context.system)

    async def _moved_anyway(self, plan: MigrationPlan) -> migration_recovery.Sighting | None:
        return await migration_recovery.moved_anyway(
            self.driver, self.context.system, self.vm.datacenter_id, self.vm.id, plan
        )

    async def _end_migration(self, plan: MigrationPlan, change: VMChange, *, moved: bool) -> None:
        """Record and claims follow the VM, in one transaction with the hold: to the target
        (``moved``) or left here, the hold given back. A store that refuses raises: the task
        stays RUNNING and the watchdog settles it from the hypervisors."""
        changes = change.fields()
        end = settle if moved else give_back
        await self._commit(
            changes,
            lambda vm, events: end(self.services.store, vm, plan, self.view, events, **changes),
        )
        if moved:
            _log.info("vm.migrated", vm_id=self.vm.id, source=plan.source_id, target=plan.target_id)
        # The volumes' exports let in only the host the VM is on now.
        gone = plan.source_id if moved else plan.target_id
        await migration_volumes.release(self.context.system, self.services.store, self.vm.id, gone)

    async def _settle_migration(self, task: Task, plan: MigrationPlan) -> None:
        """A migration nothing drives (a crash): settle it from both hypervisors, or leave it
        for the watchdog while they cannot say (one unreachable, both have the VM)."""
        try:
            sighting = await migration_recovery.look(
                self.driver, self.context.system, self.vm.datacenter_id, self.vm.id, plan
            )
        except CloudcoreError as exc:
            _log.warning("migration.settle_deferred", vm_id=self.vm.id, error=describe(exc))
            return
        place = migration_recovery.where(sighting)
        if place is migration_recovery.Where.BOTH:
            _log.warning("migration.settle_deferred", vm_id=self.vm.id, on="both hosts")
            return
        moved = place is migration_recovery.Where.TARGET
        power = (
            to_power(sighting[1] if moved else sighting[0])
            if place is not migration_recovery.Where.NOWHERE
            else None
        )
        on = {"source": f"on {plan.source_id}", "nowhere": "on neither host"}.get(place, "")
        fault = None if moved else f"migration {task.id} interrupted; the VM is {on}"
        state = monitor.STATE_FOR_POWER.get(power) if power else None
        change = VMChange(
            state=state or VMState.ERROR,
            power=power or PowerState.UNKNOWN,
            task_id=None,
            fault=fault,
        )
        await self._end_migration(plan, change, moved=moved)
        journal = Journal(self.services.store, task, self.services.waiters)
        await journal.finish(TaskState.SUCCEEDED if moved else TaskState.FAILED, fault)
        if moved:
            await hand_over(self.context.system, self.vm, self.context.parent)
