"""The deploy task: schedule, claim, define, start — one actor per deploy in flight.

Every step is journaled before it runs and every step is idempotent, so the runner can be resumed
from whatever the store says after a crash: it reads the VM's persisted state and carries on from
there. A VM no host fits goes back to DEFINED with a fault and is retried; after the configured
attempts it goes to ERROR. A define that fails is rolled back (the VM is undefined, its claim
released) and scheduled again.

No error leaves the deploy hanging. A retryable one (a backend down, an ask with no reply) reads
the store again and carries on after a backoff, for at most one step deadline in a row; past that,
or for any other error, the deploy is settled from what the store shows: a VM not yet defined is
scheduled again (an attempt) or goes to ERROR, a VM whose host actor is not running is taken off
that host, a VM the host's actor never reports on within its steps' deadlines goes to ERROR. If
even that fails (the store is down), the runner stops and the watchdog resumes the task later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, assert_never

from actors import claims
from actors.journal import Journal, backoff, retryable
from actors.messages import AdoptVM, Forget, OperationFinished, Provision
from actors.quotas import vm_usage
from actors.scheduler.messages import ReservationEnded, ReserveHost, SchedulerMessage
from actors.services import Services
from actors.vm_events import state_changed
from cloudcore.errors import (
    HostWaking,
    InsufficientCapacity,
    NotFound,
    NoValidHost,
    VersionConflict,
    describe,
)
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, Message
from cloudcore.store import Store
from cloudcore.store.records import VM, IdempotencyKey, Task, TaskState, VMSpec, VMState, new_id

if TYPE_CHECKING:
    from actors.host import HostMessage
    from actors.vm import VMMessage

__all__ = ["DeployRunner", "write_deploy"]

_log = get_logger("actors.deploy")


class _Advance(Message, frozen=True, kw_only=True):
    pass


class _Overdue(Message, frozen=True, kw_only=True):
    """The host's VM actor has not reported on Provision number ``sent`` in time."""

    sent: int


DeployMessage = _Advance | _Overdue | OperationFinished

_PROVISIONING = frozenset({VMState.PLACED, VMState.PROVISIONING, VMState.STARTING})
#: Placements that may wait for a standby host to wake before a refusal counts as one.
_WAKE_WAITS = 3
#: Hosts the store may refuse (the scheduler's view was stale) before a placement gives up.
_PLACE_ATTEMPTS = 64


class DeployRunner(Actor[DeployMessage]):
    def __init__(
        self,
        services: Services,
        task: Task,
        scheduler: ActorRef[SchedulerMessage],
        host_ref: Callable[[str], ActorRef[HostMessage]],
        vm: VM | None = None,
    ) -> None:
        self.services = services
        self.journal = Journal(services.store, task, services.waiters)
        self.vm_id = task.subject.removeprefix("vm/")
        self.start = bool(task.data.get("start", True))
        self.scheduler = scheduler
        self.host_ref = host_ref
        self.attempts = int(task.data.get("attempts", 0))
        self.known: VM | None = vm  # the record as the deploy was submitted, used once
        self.failures = 0  # errors in a row, each retried after a backoff
        self.retry_until: float | None = None  # when the errors in a row must be settled
        self.wake_waits = 0  # placements that waited for a standby host to wake
        self.boot_volume = False  # the VM boots from a volume: its provisioning takes longer
        self.sent = 0  # Provision messages sent; the one awaited, if any, in ``waiting``
        self.waiting: int | None = None

    @property
    def deadline(self) -> float:
        return self.services.settings.step_deadline

    async def started(self) -> None:
        self.services.runners.add(self.journal.task.id)
        self.context.self_ref.tell(_Advance())

    async def stopping(self) -> None:
        self.services.runners.discard(self.journal.task.id)

    async def receive(self, message: DeployMessage) -> Any:
        try:
            match message:
                case _Advance():
                    if self.waiting is None:  # a stray retry while the host works: ignored
                        await self._advance()
                case _Overdue(sent=sent):
                    if self.waiting == sent:
                        self.waiting = None
                        await self._settle(
                            f"the host's VM actor did not report on the deploy within "
                            f"{self._provision_deadline():g} s"
                        )
                case OperationFinished(vm=vm, error=error):
                    self.waiting = None
                    await self._provisioned(vm, error)
                case _:
                    assert_never(message)
        except Exception as exc:
            await self._failed(exc)
        else:
            self.failures, self.retry_until = 0, None

    async def _advance(self) -> None:
        vm, self.known = self.known or await self.services.store.get(VM, self.vm_id), None
        if vm.state in (VMState.DEFINED, VMState.SCHEDULING):
            placed = await self._schedule(vm)
            if placed is None:
                return
            vm = placed
        if vm.state in _PROVISIONING or (vm.state is VMState.STOPPED and self.start and vm.task_id):
            await self._provision(vm)
            return
        if vm.state in (VMState.RUNNING, VMState.STOPPED):
            await self._done(None)
        else:
            await self._done(f"the VM is {vm.state}: the deploy cannot go on")

    async def _provision(self, vm: VM) -> None:
        """Hand the placed VM to its host's VM actor, and expect its report in time."""
        self.boot_volume = vm.spec.boot_volume is not None
        host = self.host_ref(vm.host_id or "")  # NotFound: the host's actor is not running
        vm_ref: ActorRef[VMMessage] = await host.ask(AdoptVM(vm=vm), timeout=self.deadline)
        self.sent += 1
        self.waiting = self.sent
        vm_ref.tell(
            Provision(
                task=self.journal.task,
                start=self.start,
                reply_to=self.context.self_ref,
                steps_done=self.journal.known_steps_done,
            )
        )
        self.context.schedule_once(
            f"overdue-{self.sent}", self._provision_deadline(), _Overdue(sent=self.sent)
        )

    def _provision_deadline(self) -> float:
        # define, then start: each a step with its deadline, and a margin for the records;
        # between them a boot volume's attach, a step of four deadlines (actors.boot_volume)
        steps = (2.5 if self.start else 1.5) + (4 if self.boot_volume else 0)
        return self.deadline * steps

    async def _schedule(self, vm: VM) -> VM | None:
        """Place the VM; None if it must wait for another attempt or failed for good."""
        store = self.services.store
        if vm.state is VMState.DEFINED:
            scheduling = {"state": VMState.SCHEDULING, "task_id": self.journal.task.id}
            vm = await store.update(
                VM,
                vm.id,
                expected_version=vm.version,
                events=state_changed(vm, scheduling),
                **scheduling,
            )
        try:
            placed: VM = await self.journal.step(
                "schedule",
                lambda: self._place(vm),
                deadline=self.deadline,
                data={"attempt": self.attempts + 1},
            )
            return placed
        except HostWaking as exc:  # standby capacity: ready after the wake-up delay
            self.wake_waits += 1
            if self.wake_waits > _WAKE_WAITS:  # the wakes keep failing: an ordinary refusal
                await self._retry_or_fail(vm, describe(exc))
                return None
            _log.info("deploy.waits_for_host", vm_id=vm.id, host_id=exc.host_id, delay=exc.ready_in)
            self.context.schedule_once("retry", exc.ready_in, _Advance())
            return None
        except NoValidHost as exc:
            await self._retry_or_fail(vm, describe(exc))
            return None
        except VersionConflict:
            self.context.self_ref.tell(_Advance())  # someone changed the VM: read it again
            return None

    async def _place(self, vm: VM) -> VM:
        """The scheduler picks a host and holds it in its view; the claim is written here, so
        the store writes of concurrent deploys overlap rather than queue behind the scheduler
        (one at a time there, they bounded a burst to one placement per round trip)."""
        for _ in range(_PLACE_ATTEMPTS):
            # Under a burst the scheduler's mailbox is long: the ask waits as long as the step.
            reserve = ReserveHost(vm=vm)
            host_id: str = await self.scheduler.ask(reserve, timeout=self.deadline + 1)
            placed: VM | None = None
            try:
                placed, _ = await self.services.store.place_vm(
                    vm.id, host_id, expected_version=vm.version, state=VMState.PLACED
                )
            except InsufficientCapacity:
                continue  # the view was stale: it is read again, and another host tried
            finally:
                ended = ReservationEnded(vm_id=vm.id, host_id=host_id, placed=placed is not None)
                self.scheduler.tell(ended)
            return placed
        raise NoValidHost(
            f"gave up placing VM {vm.id!r} after {_PLACE_ATTEMPTS} hosts refused by the store: "
            "hosts are changing faster than the scheduler learns of it"
        )

    async def _retry_or_fail(self, vm: VM, fault: str) -> None:
        store = self.services.store
        self.attempts += 1
        vm = await store.get(VM, vm.id)
        if self.attempts < self.services.settings.schedule_attempts:
            again = {"state": VMState.DEFINED, "fault": fault}
            await store.update(
                VM, vm.id, expected_version=vm.version, events=state_changed(vm, again), **again
            )
            delay = 0.5 * self.attempts
            _log.info("deploy.retry", vm_id=vm.id, attempt=self.attempts, delay=delay, fault=fault)
            self.context.schedule_once("retry", delay, _Advance())
            return
        failed = {"state": VMState.ERROR, "fault": fault, "task_id": None}
        await store.update(
            VM, vm.id, expected_version=vm.version, events=state_changed(vm, failed), **failed
        )
        await self._done(fault)

    async def _provisioned(self, vm: VM, error: str | None) -> None:
        if error is None:
            await self._done(None)
        elif vm.state is VMState.PLACED:  # define failed and was rolled back: place elsewhere
            await self._unplace(vm, error)
        elif vm.state in _PROVISIONING:  # the VM actor could not record the outcome: resume
            await self._failed(_Unrecorded(error))
        else:
            await self._done(error)

    async def _unplace(self, vm: VM, fault: str) -> None:
        """Take the VM off its host (nothing is defined there) and schedule it again."""
        host_id = vm.host_id
        vm = await claims.release(self.services.store, vm, self.scheduler)
        if host_id is not None and (host := self._host(host_id)) is not None:
            host.tell(Forget(vm_id=vm.id))
        await self._retry_or_fail(vm, fault)

    def _host(self, host_id: str) -> ActorRef[HostMessage] | None:
        try:
            return self.host_ref(host_id)
        except NotFound:
            return None

    # ----------------------------------------------------------------- when a step fails

    async def _failed(self, error: Exception) -> None:
        """Retry a retryable error after a backoff (reading the store again), within one step
        deadline of errors in a row; otherwise settle the deploy."""
        now = asyncio.get_running_loop().time()
        if self.retry_until is None:
            self.retry_until = now + self.deadline
        self.failures += 1
        delay = backoff(self.failures)
        if _transient(error) and now + delay < self.retry_until:
            _log.info(
                "deploy.retry_error",
                task_id=self.journal.task.id,
                failures=self.failures,
                delay=delay,
                error=describe(error),
            )
            self.context.schedule_once("retry", delay, _Advance())
            return
        try:
            await self._settle(describe(error))
        except Exception as exc:  # the store itself fails: the watchdog resumes the task later
            _log.error(
                "deploy.unsettled", task_id=self.journal.task.id, error=describe(exc), cause=error
            )
            self.context.stop(self.context.self_ref)
        self.failures, self.retry_until = 0, None

    async def _settle(self, fault: str) -> None:
        """End or redirect the deploy from what the store shows, after ``fault``."""
        vm = await self.services.store.get(VM, self.vm_id)
        _log.warning(
            "deploy.settling", task_id=self.journal.task.id, state=str(vm.state), fault=fault
        )
        alive = vm.host_id is not None and self._host(vm.host_id) is not None
        if vm.state in (VMState.DEFINED, VMState.SCHEDULING):
            await self._retry_or_fail(vm, fault)
        elif vm.state is VMState.PLACED and not alive:
            await self._unplace(vm, f"{fault}; host {vm.host_id}'s actor is not running")
        elif vm.state in _PROVISIONING and alive and self.sent < 2:
            await self._provision(vm)  # once more: the VM actor resumes from the hypervisor
        elif vm.state in _PROVISIONING:
            where = "its host's actor is not running" if not alive else "no report from its host"
            fault = f"{fault}; {where}: the hypervisor may hold the VM (recover it)"
            failed = {"state": VMState.ERROR, "fault": fault, "task_id": None}
            await self.services.store.update(
                VM, vm.id, expected_version=vm.version, events=state_changed(vm, failed), **failed
            )
            await self._done(fault)
        else:
            await self._advance()

    async def _done(self, error: str | None) -> None:
        await self.journal.finish(TaskState.FAILED if error else TaskState.SUCCEEDED, error)
        self.context.stop(self.context.self_ref)


class _Unrecorded(Exception):
    """The VM actor ended its work but could not record where the VM stands."""


def _transient(error: Exception) -> bool:
    """An error after which the same step may go through: a backend down, a reply not in time,
    a record changed under us, the VM actor unable to record."""
    return retryable(error) or isinstance(error, TimeoutError | VersionConflict | _Unrecorded)


async def write_deploy(
    store: Store,
    *,
    tenant_id: str,
    datacenter_id: str,
    name: str,
    spec: VMSpec,
    start: bool,
    state: TaskState,
    claim: IdempotencyKey | None = None,
    mac_prefix: str | None = None,
) -> tuple[VM, Task]:
    """A new VM (DEFINED) and its deploy task in ``state``, counted against the tenant's
    quotas, in one transaction (QuotaExceeded names the resource; then nothing is written).
    ``claim``: the Idempotency-Key the create was asked under, recorded with the task."""
    vm = VM(
        id=new_id(uuid=True),
        tenant_id=tenant_id,
        datacenter_id=datacenter_id,
        name=name,
        spec=spec,
        desired_state=VMState.RUNNING if start else VMState.STOPPED,
    )
    task = Task(
        id=new_id("task-"),  # one id format for every task, in time order (see new_id)
        tenant_id=tenant_id,
        kind="vm.deploy",
        subject=f"vm/{vm.id}",
        state=state,
        data={"start": start},
    )
    return await store.create_vm(vm, task, vm_usage(spec), claim=claim, mac_prefix=mac_prefix)
