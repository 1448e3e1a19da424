"""The deploy task: schedule, claim, define, start — one actor per deploy in flight.

Every step is journaled before it runs and every step is idempotent, so the runner can be resumed
from whatever the store says after a crash: it reads the VM's persisted state and carries on from
there. A VM no host fits goes back to DEFINED with a fault and is retried; after the configured
attempts it goes to ERROR. A define that fails is rolled back (the VM is undefined, its claim
released) and scheduled again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, assert_never

from actors import claims
from actors.journal import Journal
from actors.messages import AdoptVM, Forget, OperationFinished, Provision
from actors.scheduler.messages import PlaceVM, SchedulerMessage
from actors.services import Services
from cloudcore.errors import NoValidHost, VersionConflict, describe
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, Message
from cloudcore.store.records import VM, Task, TaskState, VMState

if TYPE_CHECKING:
    from actors.host import HostMessage
    from actors.vm import VMMessage

__all__ = ["DeployRunner"]

_log = get_logger("actors.deploy")


class _Advance(Message, frozen=True, kw_only=True):
    pass


DeployMessage = _Advance | OperationFinished

_PROVISIONING = frozenset({VMState.PLACED, VMState.PROVISIONING, VMState.STARTING})


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

    async def started(self) -> None:
        self.context.self_ref.tell(_Advance())

    async def receive(self, message: DeployMessage) -> Any:
        match message:
            case _Advance():
                await self._advance()
            case OperationFinished(vm=vm, error=error):
                await self._provisioned(vm, error)
            case _:
                assert_never(message)

    async def _advance(self) -> None:
        vm, self.known = self.known or await self.services.store.get(VM, self.vm_id), None
        if vm.state in (VMState.DEFINED, VMState.SCHEDULING):
            placed = await self._schedule(vm)
            if placed is None:
                return
            vm = placed
        if vm.state in _PROVISIONING or (vm.state is VMState.STOPPED and self.start and vm.task_id):
            host = self.host_ref(vm.host_id or "")
            vm_ref: ActorRef[VMMessage] = await host.ask(AdoptVM(vm=vm))
            vm_ref.tell(
                Provision(task=self.journal.task, start=self.start, reply_to=self.context.self_ref)
            )
            return
        if vm.state in (VMState.RUNNING, VMState.STOPPED):
            await self._done(None)
        else:
            await self._done(f"the VM is {vm.state}: the deploy cannot go on")

    async def _schedule(self, vm: VM) -> VM | None:
        """Place the VM; None if it must wait for another attempt or failed for good."""
        store = self.services.store
        if vm.state is VMState.DEFINED:
            vm = await store.update(
                VM,
                vm.id,
                expected_version=vm.version,
                state=VMState.SCHEDULING,
                task_id=self.journal.task.id,
            )
        try:
            placed: VM = await self.journal.step(
                "schedule",
                lambda: self.scheduler.ask(PlaceVM(vm_id=vm.id, expected_version=vm.version)),
                deadline=self.services.settings.step_deadline,
                data={"attempt": self.attempts + 1},
            )
            return placed
        except NoValidHost as exc:
            await self._retry_or_fail(vm, describe(exc))
            return None
        except VersionConflict:
            self.context.self_ref.tell(_Advance())  # someone changed the VM: read it again
            return None

    async def _retry_or_fail(self, vm: VM, fault: str) -> None:
        store = self.services.store
        self.attempts += 1
        vm = await store.get(VM, vm.id)
        if self.attempts < self.services.settings.schedule_attempts:
            await store.update(
                VM, vm.id, expected_version=vm.version, state=VMState.DEFINED, fault=fault
            )
            delay = 0.5 * self.attempts
            _log.info("deploy.retry", vm_id=vm.id, attempt=self.attempts, delay=delay, fault=fault)
            self.context.schedule_once("retry", delay, _Advance())
            return
        await store.update(
            VM, vm.id, expected_version=vm.version, state=VMState.ERROR, fault=fault, task_id=None
        )
        await self._done(fault)

    async def _provisioned(self, vm: VM, error: str | None) -> None:
        if error is None:
            await self._done(None)
        elif vm.state is VMState.PLACED:  # define failed and was rolled back: place elsewhere
            host_id = vm.host_id
            vm = await claims.release(self.services.store, vm, self.scheduler)
            if host_id is not None:
                self.host_ref(host_id).tell(Forget(vm_id=vm.id))
            await self._retry_or_fail(vm, error)
        else:
            await self._done(error)

    async def _done(self, error: str | None) -> None:
        await self.journal.finish(TaskState.FAILED if error else TaskState.SUCCEEDED, error)
        self.context.stop(self.context.self_ref)
