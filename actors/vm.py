"""The VM actor: one per placed VM, a child of its host's actor.

It owns the VM's record. Only ``receive`` writes it, so the mailbox orders every change. A long
operation runs its driver calls in a background task and reports back through the mailbox; while
it runs the VM shows a transient state and refuses other operations at once (IllegalTransition),
instead of queueing them behind the lock.
"""

from __future__ import annotations

import asyncio
from typing import Any, assert_never

import msgspec

from actors import monitor
from actors.guest import domain_spec, to_power
from actors.journal import FINAL, Journal
from actors.lifecycle import STABLE, TRANSITIONS, Operation, transition
from actors.messages import (
    GetVM,
    OperationFinished,
    PowerObserved,
    Provision,
    Recover,
    RecoverVerb,
    RequestOperation,
)
from actors.quotas import release, release_vm, resize_delta
from actors.services import DriverSlot, Services
from actors.watchdog import Resume
from cloudcore.errors import (
    IllegalTransition,
    NotFound,
    UnsupportedOperation,
    VersionConflict,
    describe,
)
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, Message
from cloudcore.store.records import VM, PowerState, Task, TaskState, VMState
from hypervisor_drivers.base import HypervisorDriver
from hypervisor_drivers.types import GuestPower

__all__ = ["VMActor"]

_log = get_logger("actors.vm")


class _Update(Message, frozen=True, kw_only=True):
    changes: dict[str, Any]


class _Finish(Message, frozen=True, kw_only=True):
    operation: Operation
    source: VMState
    journal: Any  # Journal: local only, never crosses a node
    error: str | None
    params: dict[str, Any]
    reply_to: ActorRef | None


VMMessage = (
    GetVM | RequestOperation | Provision | PowerObserved | Recover | Resume | _Update | _Finish
)


class VMActor(Actor[VMMessage]):
    def __init__(self, services: Services, vm: VM, driver: DriverSlot) -> None:
        self.services = services
        self.vm = vm
        self._driver = driver
        self.work: asyncio.Task[None] | None = None
        self.missing_sweeps = 0

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
        power = await self._power_now()
        state = monitor.STATE_FOR_POWER.get(power) if power else None
        fault = f"interrupted by a restart; the hypervisor shows {power or 'no VM'}"
        await self._save(
            state=state or VMState.ERROR,
            power=power or PowerState.UNKNOWN,
            task_id=None,
            fault=fault,
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
            case Provision():
                if self.working:  # the deploy's runner asks again: the work under way reports
                    return None
                self._begin(message.task.id)
                journal = Journal(self.services.store, message.task, self.services.waiters)
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
            case _Update(changes=changes):
                await self._save(**changes)
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
        if op is Operation.MIGRATE:  # refused whole, before the VM shows MIGRATING
            raise UnsupportedOperation(
                f"cannot migrate VM {self.vm.id}: migration between hosts is not built yet"
            )
        params = _checked_params(op, message.params)
        if op is Operation.RECONFIGURE:  # a bigger VM counts against the quota before it grows
            grow, _ = self._resize_delta(params)
            if grow:
                await self.services.store.consume_quota(self.vm.tenant_id, grow)
        journal = await Journal.begin(
            self.services.store,
            kind=f"vm.{op}",
            subject=f"vm/{self.vm.id}",
            tenant_id=self.vm.tenant_id,
            data=params,
            waiters=self.services.waiters,
        )
        source = self.vm.state
        await self._save(state=t.transient, task_id=journal.task.id, fault=None)
        self._begin(journal.task.id)
        self.work = asyncio.create_task(
            self._operate(op, source, journal, params, message.reply_to)
        )
        return journal.task

    def _begin(self, task_id: str) -> None:
        """The background work about to start drives ``task_id``: so the watchdog knows, until
        the work ends."""
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
        op: Operation,
        source: VMState,
        journal: Journal,
        params: dict[str, Any],
        reply_to: ActorRef | None,
    ) -> None:
        error: str | None = None
        try:
            await journal.step(
                op.value,
                lambda: self._drive(op, source, params),
                deadline=self._deadline(op, params),
            )
        except Exception as exc:
            error = describe(exc)
        try:
            await self.context.ref.ask(
                _Finish(
                    operation=op,
                    source=source,
                    journal=journal,
                    error=error,
                    params=params,
                    reply_to=reply_to,
                ),
                timeout=self.services.settings.step_deadline,
            )
        finally:
            self.services.runners.discard(journal.task.id)

    def _deadline(self, op: Operation, params: dict[str, Any]) -> float:
        base = self.services.settings.step_deadline
        if op is Operation.STOP:
            return base + float(params.get("timeout", self.services.settings.stop_timeout))
        return base

    async def _drive(self, op: Operation, source: VMState, params: dict[str, Any]) -> None:
        d, uuid = self.driver, self.vm.id
        if op is Operation.START:
            await d.start_vm(uuid)
        elif op is Operation.STOP:
            timeout = float(params.get("timeout", self.services.settings.stop_timeout))
            await d.stop_vm(uuid, timeout=timeout)
        elif op is Operation.REBOOT:
            await d.reboot_vm(uuid, hard=bool(params.get("hard", False)))
        elif op is Operation.PAUSE:
            await d.pause_vm(uuid)
        elif op is Operation.RESUME:
            await (d.unpause_vm(uuid) if source is VMState.PAUSED else d.resume_vm(uuid))
        elif op is Operation.SUSPEND:
            await d.suspend_vm(uuid)
        elif op is Operation.RECONFIGURE:
            await d.reconfigure_vm(
                uuid, vcpus=params.get("cpus"), memory_mib=params.get("memory_mib")
            )
        elif op is Operation.SNAPSHOT:
            await d.create_snapshot(uuid, str(params["name"]))
        elif op is Operation.DELETE:
            await d.destroy_vm(uuid)
        else:
            raise UnsupportedOperation(f"{op} is not an operation of a placed VM")

    async def _finish(self, message: _Finish) -> None:
        op, error = message.operation, message.error
        t = TRANSITIONS[op]
        journal: Journal = message.journal
        if error is None:
            target = t.success or message.source
            changes: dict[str, Any] = {"state": target, "task_id": None, "fault": None}
            if t.success in monitor.POWER_FOR_STATE:  # the power the operation left it in
                changes["power"] = monitor.POWER_FOR_STATE[t.success]
            if op is Operation.RECONFIGURE:
                changes["spec"] = _resized(self.vm, message.params)
        else:
            changes = {"state": t.failure or message.source, "task_id": None, "fault": error}
        if op is Operation.RECONFIGURE:  # give back what was taken and not used, or freed
            grow, shrink = self._resize_delta(message.params)
            freed = grow if error is not None else shrink
            await release(self.services.store, self.vm.tenant_id, freed, self.vm.id)
        if op is Operation.DELETE and error is None:
            await self._deleted()
        else:
            await self._save(**changes)
        task = await journal.finish(TaskState.FAILED if error else TaskState.SUCCEEDED, error)
        self.work = None
        if message.reply_to is not None:
            message.reply_to.tell(OperationFinished(task_id=task.id, vm=self.vm, error=error))

    def _resize_delta(self, params: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
        return resize_delta(self.vm.spec, params.get("cpus"), params.get("memory_mib"))

    # ----------------------------------------------------------------- provisioning

    async def _provision(self, journal: Journal, message: Provision, resuming: bool) -> None:
        """Define, then start if asked, each step journaled. A failed define is rolled back to
        PLACED; a failed start leaves the VM STOPPED with a fault. ``resuming``: a deploy a
        crash interrupted, whose VM may already be defined or running."""
        error: str | None = None
        try:
            await self._update(state=VMState.PROVISIONING, task_id=journal.task.id)
            error = await self._define(journal)
            if error is None:
                running = resuming and (
                    await self.driver.power_state(self.vm.id) is GuestPower.RUNNING
                )
                if running:
                    await self._update(state=VMState.RUNNING, power=PowerState.ON, task_id=None)
                elif message.start:
                    error = await self._start_defined(journal)
                else:
                    await self._update(state=VMState.STOPPED, power=PowerState.OFF, task_id=None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store failed under us: report; the task stays resumable
            error = describe(exc)
        finally:
            self.services.runners.discard(journal.task.id)
        if message.reply_to is not None:
            vm = await self.context.ref.ask(GetVM())
            message.reply_to.tell(OperationFinished(task_id=journal.task.id, vm=vm, error=error))
        self.work = None

    async def _update(self, **changes: Any) -> None:
        """Change the record from background work: through the mailbox, like every change."""
        await self.context.ref.ask(_Update(changes=changes))

    async def _define(self, journal: Journal) -> str | None:
        spec = domain_spec(self.vm)
        try:
            await journal.step(
                "define",
                lambda: self.driver.define_vm(spec),
                deadline=self.services.settings.step_deadline,
            )
        except Exception as exc:
            error = describe(exc)
            await self._roll_back(journal)
            await self._update(
                state=VMState.PLACED, task_id=None, fault=error, power=PowerState.UNKNOWN
            )
            return error
        return None

    async def _start_defined(self, journal: Journal) -> str | None:
        await self._update(state=VMState.STARTING)
        try:
            await journal.step(
                "start",
                lambda: self.driver.start_vm(self.vm.id),
                deadline=self.services.settings.step_deadline,
            )
        except Exception as exc:
            error = describe(exc)
            await self._update(
                state=VMState.STOPPED, power=PowerState.OFF, task_id=None, fault=error
            )
            return error
        await self._update(state=VMState.RUNNING, power=PowerState.ON, task_id=None)
        return None

    async def _roll_back(self, journal: Journal) -> None:
        try:
            await journal.step(
                "undefine",
                lambda: self.driver.destroy_vm(self.vm.id),
                deadline=self.services.settings.step_deadline,
            )
        except Exception as exc:
            _log.error("vm.rollback_failed", vm_id=self.vm.id, error=describe(exc))

    async def _deleted(self) -> None:
        """The VM is gone: release its claim, mark it DELETED, and stop this actor."""
        self.vm = await self.services.store.unplace_vm(
            self.vm.id, expected_version=self.vm.version, state=VMState.DELETED
        )
        await self._save(task_id=None, power=PowerState.UNKNOWN)
        await release_vm(self.services.store, self.vm)
        self.context.stop(self.context.ref)

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
            target = _target_of(task, self.vm)
            expected = monitor.POWER_FOR_STATE.get(target, PowerState.UNKNOWN)
            await self._save(state=target, power=expected, fault=None, task_id=None)
            if task is not None:
                await Journal(self.services.store, task, self.services.waiters).finish(
                    TaskState.SUCCEEDED, None
                )
        else:
            power = await self._power_now()
            settled = monitor.STATE_FOR_POWER.get(power) if power else None
            fault = None if message.verb is RecoverVerb.RETRY else f"recovered: {self.vm.fault}"
            await self._save(
                state=settled or VMState.PLACED,
                power=power or PowerState.UNKNOWN,
                fault=fault,
                task_id=None,
            )
        _log.info(
            "vm.recovered", vm_id=self.vm.id, verb=str(message.verb), state=str(self.vm.state)
        )
        return self.vm

    # ----------------------------------------------------------------- observation

    async def _observed(self, message: PowerObserved) -> None:
        power = to_power(message.power) if message.power is not None else None
        if message.source == "sweep":  # only sweeps count absences: events are hints
            self.missing_sweeps = self.missing_sweeps + 1 if power is None else 0
        policy = self.services.settings.drift_policy
        decision = monitor.reconcile(self.vm, power, self.missing_sweeps, policy)
        if decision.action != "none" and power is not None:
            # What was seen may be stale (an event queued behind the task that caused it):
            # before acting on drift, ask the hypervisor what is true now.
            power = await self._power_now()
            decision = monitor.reconcile(self.vm, power, self.missing_sweeps, policy)
        if decision.changes:
            await self._save(**decision.changes)
            _log.warning(
                "vm.drift",
                vm_id=self.vm.id,
                source=message.source,
                power=str(power),
                state=str(self.vm.state),
                action=decision.action,
            )
        if decision.enforce is not None:
            self.context.ref.tell(RequestOperation(operation=decision.enforce))

    async def _power_now(self) -> PowerState | None:
        try:
            return to_power(await self.driver.power_state(self.vm.id))
        except NotFound:
            return None

    # ----------------------------------------------------------------- persistence

    async def _save(self, **changes: Any) -> None:
        if not changes:
            return
        before = self.vm.state
        try:
            self.vm = await self.services.store.update(
                VM, self.vm.id, expected_version=self.vm.version, **changes
            )
        except VersionConflict:
            self.vm = await self.services.store.get(VM, self.vm.id)  # decide again on the truth
            raise
        if self.vm.state is not before or "power" in changes:
            await self.services.publish(
                "vm.state_changed",
                f"vm/{self.vm.id}",
                self.vm.tenant_id,
                {
                    "state": str(self.vm.state),
                    "power": str(self.vm.power),
                    "task_id": self.vm.task_id,
                    "fault": self.vm.fault,
                },
            )


def _target_of(task: Task | None, vm: VM) -> VMState:
    """The state a task leaves its VM in when it succeeds."""
    if task is None or task.kind == "vm.deploy":
        return vm.desired_state
    t = TRANSITIONS[Operation(task.kind.removeprefix("vm."))]
    return t.success or vm.desired_state


def _checked_params(op: Operation, params: dict[str, Any]) -> dict[str, Any]:
    """Validate an operation's parameters before anything is written."""
    if op is Operation.RECONFIGURE:
        cpus, memory = params.get("cpus"), params.get("memory_mib")
        if cpus is None and memory is None:
            raise ValueError("reconfigure needs cpus and/or memory_mib")
        for name, value in (("cpus", cpus), ("memory_mib", memory)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"reconfigure: {name} must be a whole number >= 1, got {value!r}")
    if op is Operation.SNAPSHOT:
        snapshot = params.get("name")
        if not isinstance(snapshot, str) or not snapshot or len(snapshot) > 100:
            raise ValueError("snapshot needs a name of 1 to 100 characters")
    if op is Operation.STOP and "timeout" in params:
        timeout = params["timeout"]
        if not isinstance(timeout, int | float) or timeout < 0:
            raise ValueError(f"stop: timeout must be a number of seconds >= 0, got {timeout!r}")
    return dict(params)


def _resized(vm: VM, params: dict[str, Any]) -> Any:
    return msgspec.structs.replace(
        vm.spec,
        cpus=params.get("cpus") or vm.spec.cpus,
        memory_mib=params.get("memory_mib") or vm.spec.memory_mib,
    )
