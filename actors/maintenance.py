"""Maintenance of a host (CloudStack's PrepareForMaintenance): drain it by live migration.

:func:`change_admin_state` moves a host along :mod:`actors.host_lifecycle` (compare-and-set,
refused whole when the state does not allow it). A ``host.maintenance`` task (subject
``host/<id>``) is driven by a :class:`MaintenanceRunner`, a child of the datacenter actor: the
host is PREPARING_FOR_MAINTENANCE, so the scheduler places nothing there; each VM on it
migrates (live if RUNNING, cold if STOPPED) to where the scheduler chooses, at most
``orchestrator.drain_concurrency`` at once, each a ``vm.migrate`` task of its own; the host is
looked at again once they have, for VMs that came in as it went PREPARING. Then the host
is MAINTENANCE if none is left, or ERROR_IN_MAINTENANCE with the task naming every VM that
stays and why (the scheduler's explanation when no host fits). A cancel (the host back to
ENABLED) stops starting migrations; those in flight end on their own. A drain a crash cut short
is run again by the datacenter when it starts: it looks only at what is still on the host.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from actors.host_lifecycle import HostOperation, host_transition
from actors.journal import Journal
from actors.lifecycle import Operation
from actors.messages import RequestOperation
from actors.operations import MigrateParams
from actors.paging import all_records
from actors.scheduler.messages import HostUpdated, SchedulerMessage
from actors.services import Services
from cloudcore.errors import CloudcoreError, HostWaking, VersionConflict, describe
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, Message
from cloudcore.store import Store
from cloudcore.store.records import (
    VM,
    AdminState,
    Host,
    OutboxEvent,
    Task,
    TaskState,
    VMState,
)

__all__ = ["MAINTENANCE", "MaintenanceRunner", "change_admin_state", "host_of"]

_log = get_logger("actors.maintenance")

#: The kind of a host's maintenance task.
MAINTENANCE = "host.maintenance"
_MOVABLE = frozenset({VMState.RUNNING, VMState.STOPPED})
#: Tries of one VM's migration in a drain; reasons that another try cannot change.
_ATTEMPTS = 4
_RETRY_DELAY = 0.5  # seconds before the second try, doubled for each further one
_FINAL_REASONS = ("it is ", "maintenance cancelled")
_WAKE_WAITS = 3  # waits of one VM's move for a standby host woken to take it
_PASSES = 3  # passes over the host's VMs (one more for each that came in meanwhile)
_REPORT_EVERY = 0.5  # seconds between two progress writes of a drain


def host_of(task: Task) -> str:
    return task.subject.removeprefix("host/")


async def change_admin_state(
    store: Store,
    host_id: str,
    operation: HostOperation,
    data: Mapping[str, Any] | None = None,
) -> Host:
    """Move the host's admin state by ``operation`` (compare-and-set, re-read on a conflict
    with its actor's health writes), with a ``host.admin_state_changed`` event. Raises
    IllegalTransition naming what is allowed, NotFound."""
    for attempt in range(3):
        host = await store.get(Host, host_id)
        target = host_transition(operation, host.admin_state, host_id)
        changed = OutboxEvent(
            type="host.admin_state_changed",
            subject=f"host/{host_id}",
            data={"admin_state": str(target), **(data or {})},
        )
        try:
            return await store.update(
                Host, host_id, expected_version=host.version, events=[changed], admin_state=target
            )
        except VersionConflict:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class _Stop(Message, frozen=True, kw_only=True):
    pass


class MaintenanceRunner(Actor[_Stop]):
    """Drives one host's maintenance task to its end, then stops."""

    def __init__(
        self, services: Services, task: Task, scheduler: ActorRef[SchedulerMessage] | None
    ) -> None:
        self.services = services
        self.journal = Journal(services.store, task, services.waiters)
        self.host_id = host_of(task)
        self.scheduler = scheduler
        self.work: asyncio.Task[None] | None = None
        self.unmoved: dict[str, str] = {}
        self.moved = 0
        self._report = asyncio.Lock()
        self._reported = 0.0  # when progress was last written

    async def started(self) -> None:
        self.services.runners.add(self.journal.task.id)
        self.work = asyncio.create_task(self._run())

    async def stopping(self) -> None:
        if self.work is not None:
            self.work.cancel()
        self.services.runners.discard(self.journal.task.id)

    async def receive(self, message: _Stop) -> None:
        self.context.stop(self.context.self_ref)

    async def _run(self) -> None:
        settings = self.services.settings
        try:
            await self.journal.step(
                "drain",
                self._drain,
                deadline=settings.migration_deadline * 4 + settings.step_deadline,
                retry=False,
            )
            await self._end()
        except Exception as exc:
            _log.error("maintenance.failed", host_id=self.host_id, error=describe(exc))
            await self._end(describe(exc))
        finally:
            self.context.self_ref.tell(_Stop())

    async def _still_preparing(self) -> bool:
        host = await self.services.store.get(Host, self.host_id)
        return host.admin_state is AdminState.PREPARING_FOR_MAINTENANCE

    async def _on_host(self) -> list[VM]:
        store = self.services.store
        return [
            vm
            async for vm in all_records(store, VM, {"host_id": self.host_id})
            if vm.state is not VMState.DELETED
        ]

    async def _drain(self) -> None:
        """Pass after pass over what is on the host: a VM that came in while it was becoming
        PREPARING (a migration that chose it just before) is moved by the next pass."""
        gate = asyncio.Semaphore(self.services.settings.drain_concurrency)
        seen: set[str] = set()
        for _ in range(_PASSES):
            vms = [vm for vm in await self._on_host() if vm.id not in seen]
            if not vms:
                return
            seen.update(vm.id for vm in vms)
            await asyncio.gather(*(self._one(gate, vm, len(seen)) for vm in vms))

    async def _one(self, gate: asyncio.Semaphore, vm: VM, total: int) -> None:
        async with gate:
            reason = await self._move(vm)
        async with self._report:
            if reason is None:
                self.moved += 1
            else:
                self.unmoved[vm.id] = reason
            # Progress is written at most every _REPORT_EVERY seconds, and at the end of a
            # pass: a write per VM was a tenth of a drain's writes.
            now = time.monotonic()
            if now - self._reported >= _REPORT_EVERY or self.moved + len(self.unmoved) >= total:
                self._reported = now
                progress = {"moved": self.moved, "total": total, "unmoved": dict(self.unmoved)}
                await self.journal.report(progress)

    async def _move(self, vm: VM) -> str | None:
        """Migrate ``vm`` away, trying again when a refusal may have been a race (the target
        chosen went into maintenance or filled up between the choice and the hold); None once
        it is off the host, else why it stays."""
        reason: str | None = None
        attempt = woken = 0
        while attempt < _ATTEMPTS:
            if attempt:  # let the race settle: the scheduler learns of the target's new state
                await asyncio.sleep(_RETRY_DELAY * 2 ** (attempt - 1))
            reason = await self._move_once(vm)
            if reason is None or reason.startswith(_FINAL_REASONS):
                return reason
            if HostWaking.__name__ in reason and woken < _WAKE_WAITS:
                # only a standby host can take it, and it is being woken: wait, not a try
                woken += 1
                await asyncio.sleep(self.services.settings.host_wake_delay)
                continue
            attempt += 1
        return reason

    async def _move_once(self, vm: VM) -> str | None:
        store, settings = self.services.store, self.services.settings
        wait = settings.migration_deadline + settings.step_deadline
        if not await self._still_preparing():
            return "maintenance cancelled before it moved"
        vm = await store.get(VM, vm.id)
        if vm.task_id is not None:  # an operation in flight (a migration a crash cut short)
            await self._wait(vm.task_id, wait)
            vm = await store.get(VM, vm.id)
        if vm.host_id != self.host_id or vm.state is VMState.DELETED:
            return None
        if vm.state not in _MOVABLE:
            return f"it is {vm.state}: only RUNNING (live) or STOPPED (cold) VMs migrate"
        try:
            ref = self.context.system.lookup(f"/user/dc/{vm.datacenter_id}/{vm.host_id}/{vm.id}")
            task: Task = await ref.ask(
                RequestOperation(operation=Operation.MIGRATE, params=MigrateParams())
            )
        except CloudcoreError as exc:
            return describe(exc)
        ended = await self._wait(task.id, wait)
        if ended is None or ended.state is not TaskState.SUCCEEDED:
            return ended.error if ended is not None and ended.error else "its migration failed"
        return None

    async def _wait(self, task_id: str, timeout: float) -> Task | None:
        try:
            return await self.services.waiters.wait(self.services.store, task_id, timeout)
        except TimeoutError:
            return None

    async def _end(self, error: str | None = None) -> None:
        if not await self._still_preparing():
            await self.journal.finish(TaskState.CANCELLED, f"cancelled; {self.moved} VMs had moved")
            return
        left = await self._on_host()
        if not left and error is None:
            host = await change_admin_state(
                self.services.store, self.host_id, HostOperation.DRAINED
            )
            await self.journal.finish(TaskState.SUCCEEDED)
        else:
            reasons = {vm.id: self.unmoved.get(vm.id, error or "still on the host") for vm in left}
            host = await change_admin_state(
                self.services.store,
                self.host_id,
                HostOperation.DRAIN_FAILED,
                {"unmoved": reasons},
            )
            said = "; ".join(f"VM {vm_id}: {why}" for vm_id, why in sorted(reasons.items()))
            await self.journal.finish(
                TaskState.FAILED, f"{len(reasons)} VMs could not move off {self.host_id}: {said}"
            )
        if self.scheduler is not None:
            self.scheduler.tell(HostUpdated(host=host))
        _log.info("maintenance.ended", host_id=self.host_id, state=str(host.admin_state))
