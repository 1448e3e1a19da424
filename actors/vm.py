"""The VM actor: one per placed VM, a child of its host's actor.

It owns the VM's record. Only ``receive`` writes it, so the mailbox orders every change. A long
operation runs its driver calls in a background task and reports back through the mailbox; while
it runs the VM shows a transient state and refuses other operations at once (IllegalTransition),
instead of queueing them behind the lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, assert_never

import msgspec

from actors import boot_volume, claims, migration, monitor, vm_volumes
from actors.guest import domain_spec, drive, to_power, vm_nics
from actors.journal import FINAL, Journal
from actors.lifecycle import STABLE, TRANSITIONS, Operation, target_of, transition
from actors.messages import (
    AbortTask,
    GetVM,
    Observation,
    OperationFinished,
    PowerObserved,
    Provision,
    Recover,
    RecoverVerb,
    RequestOperation,
    SetHA,
    VMChange,
)
from actors.operations import (
    DeleteParams,
    MigrateParams,
    OperationParams,
    ReconfigureParams,
    StopParams,
    default_params,
    task_data,
)
from actors.scheduler.messages import SchedulerMessage
from actors.services import DriverSlot, Services
from actors.vm_checks import refuse_doomed
from actors.vm_events import state_changed
from actors.vm_mobility import MobilitySteps
from actors.watchdog import Resume
from cloudcore.errors import (
    Conflict,
    IllegalTransition,
    InvalidRequest,
    NotFound,
    UnsupportedOperation,
    VersionConflict,
    describe,
)
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, Message
from cloudcore.store.records import VM, OutboxEvent, PowerState, Task, TaskState, VMSpec, VMState
from hypervisor_drivers.base import HypervisorDriver
from hypervisor_drivers.types import GuestPower

__all__ = ["VMActor"]

_log = get_logger("actors.vm")


class _Update(Message, frozen=True, kw_only=True):
    """From the actor's own background work: apply ``change`` to the record."""

    change: VMChange


class _Finish(Message, frozen=True, kw_only=True):
    """From the actor's own background work: the operation ended (``error`` None: it did).
    Told only by the actor to itself, so it never crosses a node: ``journal`` is the live
    Journal object, which no wire could carry (the transport would refuse to encode it)."""

    source: VMState
    journal: Journal
    error: str | None
    params: OperationParams
    reply_to: ActorRef[OperationFinished] | None
    spec_before: VMSpec  # the size a failed reconfigure goes back to


VMMessage = (
    GetVM
    | RequestOperation
    | AbortTask
    | SetHA
    | Provision
    | PowerObserved
    | Recover
    | Resume
    | _Update
    | _Finish
)


class VMActor(MobilitySteps, Actor[VMMessage]):
    def __init__(
        self,
        services: Services,
        vm: VM,
        driver: DriverSlot,
        view: ActorRef[SchedulerMessage] | None = None,
    ) -> None:
        self.services = services
        self.vm = vm
        self._driver = driver
        self.view = view  # the datacenter's scheduler, told of every change of the VM's claim
        self.work: asyncio.Task[None] | None = None
        self.missing_sweeps = 0
        self.migration: migration.Migration | None = None  # the migration in flight

    @property
    def driver(self) -> HypervisorDriver:
        """The host's live driver (a new one after its connection was lost)."""
        return self._driver.current

    async def started(self) -> None:
        if self.context.restarts:  # the record given at spawn is stale: the store has the truth
            self.vm = await self.services.store.get(VM, self.vm.id)
        if self.vm.task_id is not None and self.vm.state not in STABLE:
            await self._settle_interrupted(self.vm.task_id)

    async def stopping(self) -> None:
        if self.work is not None:
            self.work.cancel()

    @property
    def working(self) -> bool:
        """Whether an operation's background work runs now."""
        return self.work is not None and not self.work.done()

    async def _settle_interrupted(self, task_id: str) -> None:
        """An operation a crash cut short: ask the hypervisor what is true and end the task.
        Deploys are left to their runner, which resumes them."""
        try:
            task = await self.services.store.get(Task, task_id)
        except NotFound:
            task = None
        if task is not None and task.kind == "vm.deploy":
            return
        if task is not None and (plan := migration.MigrationPlan.of_task(task)) is not None:
            await self._settle_migration(task, plan)
            return
        power = await self._power_now()
        state = monitor.STATE_FOR_POWER.get(power) if power else None
        fault = f"interrupted by a restart; the hypervisor shows {power or 'no VM'}"
        await self._save(
            VMChange(
                state=state or VMState.ERROR,
                power=power or PowerState.UNKNOWN,
                task_id=None,
                fault=fault,
            )
        )
        if task is not None and task.state not in FINAL:
            op = Operation(task.kind.removeprefix("vm."))
            reached = TRANSITIONS[op].success in (None, self.vm.state)
            journal = Journal(self.services.store, task, self.services.waiters)
            await journal.finish(
                TaskState.SUCCEEDED if reached else TaskState.FAILED, None if reached else fault
            )

    async def receive(self, message: VMMessage) -> Any:
        match message:
            case GetVM():
                return self.vm
            case Recover():
                return await self._recover(message)
            case RequestOperation():
                return await self._request(message)
            case AbortTask():
                if self.migration is None or self.vm.task_id != message.task_id:
                    raise Conflict(
                        f"VM {self.vm.id} runs no migration {message.task_id}: only a migration"
                        " in flight can be aborted"
                    )
                self.migration.abort(message.reason)
                return None
            case SetHA():
                return await self._set_ha(message)
            case Provision():
                if self.working:  # the deploy's runner asks again: the work under way reports
                    return None
                self._begin(message.task.id)
                s = self.services
                journal = Journal(s.store, message.task, s.waiters, steps_done=message.steps_done)
                resuming = self.vm.state is not VMState.PLACED
                self.work = asyncio.create_task(self._provision(journal, message, resuming))
                return None
            case Resume(task_id=task_id):
                if not self.working:
                    await self._resume(task_id)
                return None
            case PowerObserved():
                await self._observed(message)
                return None
            case _Update(change=change):
                await self._save(change)
                return self.vm
            case _Finish():
                await self._finish(message)
                return None
            case _:
                assert_never(message)

    # ----------------------------------------------------------------- operations

    async def _request(self, message: RequestOperation) -> Any:
        op = message.operation
        t = transition(op, self.vm.state, self.vm.id)
        if op is Operation.DEPLOY:
            raise UnsupportedOperation("deploy goes through the datacenter, not the VM actor")
        params = default_params(op) if message.params is None else message.params
        if params.operation is not op:
            raise InvalidRequest(f"{op} does not take {type(params).__name__}")
        await refuse_doomed(self.vm, self.driver, params)
        data = task_data(params)
        plan = None
        if isinstance(params, MigrateParams):  # the target chosen before the task begins
            plan = await migration.prepare(
                self.services, self.context.system, self.vm, params, self.driver, self.view
            )
            data.update(plan.task_data())
        spec_before = self.vm.spec
        if isinstance(params, ReconfigureParams):  # growth is claimed (host, quota) before a task
            target = claims.resized(spec_before, params.cpus, params.memory_mib)
            await self._commit(
                {},
                lambda vm, events: claims.begin_resize(
                    self.services.store, vm, target, self.view, events=events
                ),
            )
        try:
            journal = await Journal.begin(
                self.services.store,
                kind=f"vm.{op}",
                subject=f"vm/{self.vm.id}",
                tenant_id=self.vm.tenant_id,
                data=data,
                waiters=self.services.waiters,
            )
            source = self.vm.state
            begun = VMChange(state=t.transient, task_id=journal.task.id, fault=None)
            if plan is None:
                await self._save(begun)
            else:  # held on the target with the VM's change: one transaction
                await self._hold(journal, plan, begun)
            self._begin(journal.task.id)
        except BaseException:
            if isinstance(params, ReconfigureParams):  # give the growth back: it never started
                await self._commit(
                    {},
                    lambda vm, events: claims.end_resize(
                        self.services.store, vm, spec_before, self.view, events=events
                    ),
                )
            raise
        self.work = asyncio.create_task(
            self._operate(source, journal, params, message.reply_to, spec_before)
        )
        return journal.task

    def _begin(self, task_id: str) -> None:
        """The work about to start drives ``task_id``: the watchdog knows, until it ends."""
        _log.info("vm.task_started", vm_id=self.vm.id, task_id=task_id)
        self.services.runners.add(task_id)

    async def _resume(self, task_id: str) -> None:
        """The watchdog found ``task_id`` RUNNING with nothing driving it: settle it from what
        the hypervisor shows if the VM is at it, else end it (the VM has moved on)."""
        if self.vm.task_id == task_id:
            await self._settle_interrupted(task_id)
            return
        task = await self.services.store.get(Task, task_id)
        if task.state not in FINAL:
            await Journal(self.services.store, task, self.services.waiters).finish(
                TaskState.FAILED, f"interrupted; VM {self.vm.id} is {self.vm.state} now"
            )

    async def _operate(
        self,
        source: VMState,
        journal: Journal,
        params: OperationParams,
        reply_to: ActorRef[OperationFinished] | None,
        spec_before: VMSpec,
    ) -> None:
        error: str | None = None
        run = self.migration
        try:
            await vm_volumes.before(self.services, self.context.system, self.vm, journal, params)
            await journal.step(
                params.operation.value,
                lambda: (
                    migration.drive(self.services, self.driver, self.vm.id, run, journal)
                    if run is not None
                    else drive(
                        self.driver,
                        self.vm.id,
                        params,
                        source=source,
                        stop_timeout=self._stop_timeout,
                    )
                ),
                deadline=self._deadline(params),
                data=None if run is None else run.plan.task_data(),
                retry=run is None,  # a migration runs once: see Journal.step
            )
        except Exception as exc:
            error = describe(exc)
            if run is not None and await self._moved_anyway(run.plan) is not None:
                error = None
        try:
            await self.context.self_ref.ask(
                _Finish(
                    source=source,
                    journal=journal,
                    error=error,
                    params=params,
                    reply_to=reply_to,
                    spec_before=spec_before,
                ),
                timeout=self.services.settings.step_deadline,
            )
        finally:
            self.services.runners.discard(journal.task.id)

    def _stop_timeout(self, params: StopParams) -> float:
        return self.services.settings.stop_timeout if params.timeout is None else params.timeout

    def _deadline(self, params: OperationParams) -> float:
        base = self.services.settings.step_deadline
        if isinstance(params, StopParams):
            return base + self._stop_timeout(params)
        if isinstance(params, MigrateParams):
            return params.deadline or self.services.settings.migration_deadline
        return base

    async def _finish(self, message: _Finish) -> None:
        params, error = message.params, message.error
        op = params.operation
        t = TRANSITIONS[op]
        if error is None:
            change = VMChange(state=t.success or message.source, task_id=None, fault=None)
            if t.success in monitor.POWER_FOR_STATE:  # the power the operation left it in
                change = msgspec.structs.replace(change, power=monitor.POWER_FOR_STATE[t.success])
        else:
            change = VMChange(state=t.failure or message.source, task_id=None, fault=error)
        if isinstance(params, ReconfigureParams):  # settle claim and record in one transaction
            final = message.spec_before
            if error is None:
                final = claims.resized(self.vm.spec, params.cpus, params.memory_mib)
            changes = change.fields()
            await self._commit(
                changes,
                lambda vm, events: claims.end_resize(
                    self.services.store, vm, final, self.view, events=events, **changes
                ),
            )
        elif isinstance(params, DeleteParams) and error is None:
            await self._remove_disk()
            await self._deleted()
        elif isinstance(params, MigrateParams):
            run, self.migration = self.migration, None
            assert run is not None
            await self._end_migration(run.plan, change, moved=error is None)
        else:
            await self._save(change)
        task = await message.journal.finish(
            TaskState.FAILED if error else TaskState.SUCCEEDED, error
        )
        self.work = None
        if message.reply_to is not None:
            message.reply_to.tell(OperationFinished(task_id=task.id, vm=self.vm, error=error))
        if isinstance(params, MigrateParams) and error is None:
            await migration.hand_over(self.context.system, self.vm, self.context.parent)

    # ----------------------------------------------------------------- provisioning

    async def _provision(self, journal: Journal, message: Provision, resuming: bool) -> None:
        """Define, then start if asked, each step journaled. A failed define is rolled back to
        PLACED; a failed start leaves the VM STOPPED with a fault. ``resuming``: a deploy a
        crash interrupted, whose VM may already be defined or running."""
        error: str | None = None
        try:
            await self._update(VMChange(state=VMState.PROVISIONING, task_id=journal.task.id))
            error = await self._define(journal)
            if error is None:
                running = resuming and (
                    await self.driver.power_state(self.vm.id) is GuestPower.RUNNING
                )
                if running:
                    await self._update(
                        VMChange(state=VMState.RUNNING, power=PowerState.ON, task_id=None)
                    )
                elif message.start:
                    error = await self._start_defined(journal)
                else:
                    await self._update(
                        VMChange(state=VMState.STOPPED, power=PowerState.OFF, task_id=None)
                    )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store failed under us: report; the task stays resumable
            error = describe(exc)
        finally:
            self.services.runners.discard(journal.task.id)
        if message.reply_to is not None:
            vm = await self._own(GetVM())
            message.reply_to.tell(OperationFinished(task_id=journal.task.id, vm=vm, error=error))
        self.work = None

    async def _update(self, change: VMChange) -> None:
        """Change the record from background work: through the mailbox, like every change."""
        await self._own(_Update(change=change))

    async def _own(self, message: GetVM | _Update) -> Any:
        # As patient as a step: the change is made anyway, so a short timeout would call it failed.
        return await self.context.self_ref.ask(
            message, timeout=self.services.settings.step_deadline
        )

    async def _define(self, journal: Journal) -> str | None:
        async def define() -> None:
            spec = domain_spec(self.vm, await vm_nics(self.services.store, self.vm.id))
            disks = self.services.disks
            disk = await disks.disk_for(self.vm, self.driver) if disks is not None else None
            if disk is not None:  # from its template: the boot disk, first
                spec = msgspec.structs.replace(spec, disks=[disk, *spec.disks])
            await self.driver.define_vm(spec)

        try:
            await journal.step("define", define, deadline=self.services.settings.step_deadline)
            await boot_volume.attach(self.services, self.context.system, self.vm, journal)
        except Exception as exc:
            error = describe(exc)
            await self._roll_back(journal)
            await self._update(
                VMChange(state=VMState.PLACED, task_id=None, fault=error, power=PowerState.UNKNOWN)
            )
            return error
        return None

    async def _start_defined(self, journal: Journal) -> str | None:
        await self._update(VMChange(state=VMState.STARTING))
        due = self.services.settings.step_deadline
        try:
            await journal.step("start", lambda: self.driver.start_vm(self.vm.id), deadline=due)
        except Exception as exc:
            error = describe(exc)
            await self._update(
                VMChange(state=VMState.STOPPED, power=PowerState.OFF, task_id=None, fault=error)
            )
            return error
        await self._update(VMChange(state=VMState.RUNNING, power=PowerState.ON, task_id=None))
        return None

    async def _roll_back(self, journal: Journal) -> None:
        due = self.services.settings.step_deadline
        try:
            await journal.step("undefine", lambda: self.driver.destroy_vm(self.vm.id), deadline=due)
        except Exception as exc:
            _log.error("vm.rollback_failed", vm_id=self.vm.id, error=describe(exc))
            return
        await self._remove_disk()

    async def _remove_disk(self) -> None:
        """The VM's clone of its template, once the hypervisor has let go of it."""
        if self.services.disks is None:
            return
        try:
            await self.services.disks.remove(self.vm, self.driver)
        except Exception as exc:  # a file left behind is an operator's cleanup, not a failure
            _log.error("vm.disk_remove_failed", vm_id=self.vm.id, error=describe(exc))

    async def _deleted(self) -> None:
        """The VM is gone: mark it DELETED, releasing exactly its claim and its quota in the same
        transaction, and stop this actor."""
        gone = {"state": VMState.DELETED, "task_id": None, "power": PowerState.UNKNOWN}
        await self._commit(
            gone,
            lambda vm, events: claims.delete(
                self.services.store,
                vm,
                self.view,
                events=events,
                task_id=None,
                power=PowerState.UNKNOWN,
            ),
        )
        self.context.stop(self.context.self_ref)

    # ----------------------------------------------------------------- operator recovery

    async def _recover(self, message: Recover) -> VM:
        """SUCCEED: the VM takes the target of its last task. FAIL and RETRY: it takes what its
        hypervisor shows (PLACED when the hypervisor has no such VM), so the orchestrator can run
        the task again from a legal state. DELETE goes through the delete operation."""
        if self.vm.state is not VMState.ERROR:
            allowed = "delete" if self.vm.state in TRANSITIONS[Operation.DELETE].sources else ""
            raise IllegalTransition(
                f"recover applies to a VM in ERROR; VM {self.vm.id} is {self.vm.state}"
                + (f" (allowed now: {allowed})" if allowed else "")
            )
        task = message.task
        if message.verb is RecoverVerb.SUCCEED and task is not None and task.kind == "vm.delete":
            await self._deleted()  # the operator says it is gone: release its claim too
        elif message.verb is RecoverVerb.SUCCEED:
            target = target_of(task, self.vm)
            expected = monitor.POWER_FOR_STATE.get(target, PowerState.UNKNOWN)
            await self._save(VMChange(state=target, power=expected, fault=None, task_id=None))
            if task is not None:
                await Journal(self.services.store, task, self.services.waiters).finish(
                    TaskState.SUCCEEDED, None
                )
        else:
            power = await self._power_now()
            settled = monitor.STATE_FOR_POWER.get(power) if power else None
            fault = None if message.verb is RecoverVerb.RETRY else f"recovered: {self.vm.fault}"
            await self._save(
                VMChange(
                    state=settled or VMState.PLACED,
                    power=power or PowerState.UNKNOWN,
                    fault=fault,
                    task_id=None,
                )
            )
        _log.info(
            "vm.recovered", vm_id=self.vm.id, verb=str(message.verb), state=str(self.vm.state)
        )
        return self.vm

    # ----------------------------------------------------------------- observation

    async def _observed(self, message: PowerObserved) -> None:
        power = to_power(message.power) if message.power is not None else None
        if message.source is Observation.SWEEP:  # only sweeps count absences: events are hints
            self.missing_sweeps = self.missing_sweeps + 1 if power is None else 0
        policy = self.services.settings.drift_policy
        decision = monitor.reconcile(self.vm, power, self.missing_sweeps, policy)
        if decision.action != "none" and power is not None:
            # What was seen may be stale (an event queued behind the task that caused it):
            # before acting on drift, ask the hypervisor what is true now.
            power = await self._power_now()
            decision = monitor.reconcile(self.vm, power, self.missing_sweeps, policy)
        if decision.changes.fields():
            await self._save(decision.changes)
            _log.warning(
                "vm.drift",
                vm_id=self.vm.id,
                source=message.source,
                power=str(power),
                state=str(self.vm.state),
                action=decision.action,
            )
        if decision.enforce is not None:
            self.context.self_ref.tell(RequestOperation(operation=decision.enforce))

    async def _power_now(self) -> PowerState | None:
        try:
            return to_power(await self.driver.power_state(self.vm.id))
        except NotFound:
            return None

    # ----------------------------------------------------------------- persistence

    async def _save(self, change: VMChange) -> None:
        """Write ``change`` (compare-and-set) with its ``vm.state_changed`` event, if the
        state or the power changes, in the same transaction."""
        changes = change.fields()
        if not changes:
            return
        store = self.services.store
        await self._commit(
            changes,
            lambda vm, events: store.update(
                VM, vm.id, expected_version=vm.version, events=events, **changes
            ),
        )

    async def _commit(
        self,
        changes: dict[str, Any],
        write: Callable[[VM, list[OutboxEvent]], Awaitable[VM]],
    ) -> None:
        """Write the record through ``write``, given the record as held and the events the
        change causes (``vm.state_changed`` when ``changes`` move its state or power), which it
        writes to the outbox in the same transaction."""
        try:
            self.vm = await write(self.vm, state_changed(self.vm, changes))
        except VersionConflict:
            self.vm = await self.services.store.get(VM, self.vm.id)  # decide again on the truth
            raise
