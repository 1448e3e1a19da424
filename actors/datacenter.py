"""The datacenter actor: supervises its hosts, its scheduler, its converter of template images
(:mod:`actors.converter`) and its deploys in flight.

Deploys reach it as tasks in the store. A task written PENDING (by the API, the CLI, another
node) is claimed by a compare-and-set to RUNNING, so exactly one datacenter actor runs it; tasks
found RUNNING when the actor starts are deploys a crash interrupted, and are resumed at once, at
most ``resume_batch`` in flight (the next one as each ends), so that a restart after hundreds
were cut off does not bury the scheduler and the store under them all at the same instant.

It is also the watchdog of its datacenter's tasks (:mod:`actors.watchdog`): every
``watchdog_interval`` it looks for tasks RUNNING that nothing drives (a runner stopped on an
error it could not settle, a VM actor stopped mid-operation, a crash) and resumes a deploy with a
new runner, or has the VM's actor settle any other task from what the hypervisor shows; a task
whose VM has no actor here (its host's actor is not running) is failed, the VM put in ERROR.
A first pass runs a second after the actor starts, for the tasks unchanged since before it
started (none of its own actors can be driving those), so that a restart does not wait a whole
interval and grace; a task whose VM's actor is not there yet is left to the periodic passes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, assert_never

from actors.balancing import BalancerActor, BalancerMessage, Wake
from actors.converter import ConverterActor
from actors.deploy import DeployRunner
from actors.ha import HAActor
from actors.host import HostActor, HostMessage
from actors.journal import Journal
from actors.lifecycle import STABLE
from actors.maintenance import MAINTENANCE, MaintenanceRunner, host_of
from actors.messages import Deploy
from actors.paging import all_records
from actors.scheduler.actor import SchedulerActor
from actors.scheduler.messages import HostUpdated, SchedulerMessage
from actors.services import Services
from actors.supervision import DOMAIN_STRATEGY
from actors.vm_events import state_changed
from actors.watchdog import Resume, undriven
from cloudcore.errors import CloudcoreError, NotFound, VersionConflict, describe
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, Message, Terminated
from cloudcore.store.records import VM, Datacenter, Host, Task, TaskState, VMState

__all__ = ["AddHost", "DatacenterActor", "Maintain", "PollTasks", "WatchTasks"]

_log = get_logger("actors.datacenter")
DEPLOY = "vm.deploy"


class AddHost(Message, frozen=True, kw_only=True):
    """A host registered in the store: start managing it. Replies with its actor's ref."""

    host: Host


class Maintain(Message, frozen=True, kw_only=True):
    """Drive a host's maintenance task (its host of this datacenter), unless a runner does."""

    task: Task


class PollTasks(Message, frozen=True, kw_only=True):
    """Pick up deploy tasks written PENDING by someone else (also sent by a timer)."""


class WatchTasks(Message, frozen=True, kw_only=True):
    """Resume or settle the tasks RUNNING that nothing drives (also sent by a timer). Replies
    with the ids of the tasks it acted on."""


class _Load(Message, frozen=True, kw_only=True):
    """Load the hosts and resume the tasks found RUNNING (again, after the store failed)."""


class _FirstWatch(Message, frozen=True, kw_only=True):
    """The watchdog's first pass: the tasks RUNNING unchanged since this actor started,
    whatever the grace. While some VM has no actor yet (its host still connecting), the pass
    runs again every FIRST_WATCH_DELAY, until the periodic passes take over."""


DatacenterMessage = (
    Deploy | AddHost | Maintain | PollTasks | WatchTasks | _Load | _FirstWatch | Terminated
)

#: Seconds after the start of the watchdog's first pass (the hosts' actors connect meanwhile).
FIRST_WATCH_DELAY = 1.0


class DatacenterActor(Actor[DatacenterMessage]):
    supervisor_strategy = DOMAIN_STRATEGY

    def __init__(self, services: Services, datacenter: Datacenter, poll_interval: float = 1.0):
        self.services = services
        self.datacenter = datacenter
        self.poll_interval = poll_interval
        self.scheduler: ActorRef[SchedulerMessage] | None = None
        self.began = datetime.now(UTC)  # set again when started
        #: Deploys found RUNNING at the start, not resumed yet (see ``_resume_more``).
        self.backlog: dict[str, Task] = {}
        #: The names of the runners of deploys resumed from the backlog, until they end (new
        #: deploys have runners too, but do not count: under load the backlog would starve).
        self.resuming: set[str] = set()

    async def started(self) -> None:
        self.began = datetime.now(UTC)
        self.scheduler = self.context.spawn(
            SchedulerActor,
            self.services.store,
            self.datacenter.id,
            waker=self._wake,
            wake_delay=self.services.settings.host_wake_delay,
            name="scheduler",
        )
        self.context.spawn(
            BalancerActor, self.services, self.datacenter.id, self.scheduler, name="balancer"
        )
        self.context.spawn(
            HAActor,
            self.services,
            self.datacenter.id,
            self.scheduler,
            self.context.self_ref.tell,
            name="ha",
        )
        if self.services.disks is not None:  # the image library: conversions run here
            self.context.spawn(ConverterActor, self.services, self.datacenter.id, name="converter")
        # The timers first: if the store fails while loading, polling and the watchdog still run
        # (a failed ``started`` is resumed, and what follows the failure never ran).
        self.context.schedule_periodic("poll", self.poll_interval, PollTasks())
        watch = self.services.settings.watchdog_interval
        self.context.schedule_periodic("watchdog", watch, WatchTasks())
        first = min(FIRST_WATCH_DELAY, watch)
        self.context.schedule_once("watchdog-first", first, _FirstWatch())
        await self._load()

    async def _load(self) -> None:
        """Manage the hosts in the store and resume the deploys found RUNNING (a crash
        interrupted them); if the store fails, try again a second later."""
        store = self.services.store
        try:
            async for host in all_records(store, Host, {"datacenter_id": self.datacenter.id}):
                self._manage(host)
            running = [t async for t in all_records(store, Task, {"state": TaskState.RUNNING})]
            for task in await self._owned([t for t in running if t.kind == DEPLOY]):
                self.backlog[task.id] = task
            self._resume_more()
            for task in running:
                if task.kind == MAINTENANCE and self.context.child(host_of(task)) is not None:
                    _log.info("maintenance.resumed", task_id=task.id, subject=task.subject)
                    self._maintain(task)
        except CloudcoreError as exc:
            _log.warning(
                "datacenter.load_failed", datacenter_id=self.datacenter.id, error=describe(exc)
            )
            self.context.schedule_once("load", 1.0, _Load())

    async def receive(self, message: DatacenterMessage) -> Any:
        match message:
            case Deploy(task=task, vm=vm):
                await self._claim(task, vm)
            case AddHost(host=host):
                ref = self._manage(host)
                assert self.scheduler is not None
                self.scheduler.tell(HostUpdated(host=host))
                return ref
            case Maintain(task=task):
                self._maintain(task)
            case PollTasks():
                self._resume_more()
                pending = all_records(self.services.store, Task, {"state": TaskState.PENDING})
                for task in await self._owned([t async for t in pending if t.kind == DEPLOY]):
                    await self._claim(task)
            case WatchTasks():
                return (await self._watch())[0]
            case _FirstWatch():
                await self._first_watch(self.began)
            case Terminated(actor=ref):
                self.resuming.discard(ref.name)
                self._resume_more()  # a resumed deploy's runner ended: the next one
            case _Load():
                await self._load()
            case _:
                assert_never(message)
        return None

    def host_ref(self, host_id: str) -> ActorRef[HostMessage]:
        """The actor of a host of this datacenter; NotFound if it is not managed here."""
        ref: ActorRef[HostMessage] | None = self.context.child(host_id)
        if ref is None:
            raise NotFound(f"{self.context.path} has no child {host_id!r}")
        return ref

    def _manage(self, host: Host) -> ActorRef[HostMessage]:
        managed: ActorRef[HostMessage] | None = self.context.child(host.id)
        if managed is not None:
            return managed
        driver = self.services.driver_factory(host)
        return self.context.spawn(
            HostActor, self.services, host, driver, self.scheduler, name=host.id
        )

    async def _claim(self, task: Task, vm: VM | None = None) -> None:
        if task.state is TaskState.PENDING:
            try:
                task = await self.services.store.update(
                    Task, task.id, expected_version=task.version, state=TaskState.RUNNING
                )
            except VersionConflict:
                return  # another node (or an earlier poll) took it
        self._run(task, vm)

    def _run(self, task: Task, vm: VM | None = None) -> ActorRef[Any] | None:
        """Spawn the runner of deploy ``task``; None if one runs it already."""
        name = f"deploy-{task.id}"
        self.backlog.pop(task.id, None)
        if self.context.child(name) is not None:
            return None
        assert self.scheduler is not None
        return self.context.spawn(
            DeployRunner, self.services, task, self.scheduler, self.host_ref, vm, name=name
        )

    def _resume_more(self) -> None:
        """Resume deploys of the backlog while fewer than ``resume_batch`` runners run."""
        batch = self.services.settings.resume_batch
        while self.backlog and len(self.resuming) < batch:
            task = next(iter(self.backlog.values()))
            ref = self._run(task)
            if ref is not None:
                _log.info("deploy.resumed", task_id=task.id, subject=task.subject)
                self.resuming.add(ref.name)
                self.context.watch(ref)

    def _wake(self, host_id: str) -> None:
        """The scheduler needs a standby host's capacity: its balancer wakes it."""
        balancer: ActorRef[BalancerMessage] | None = self.context.child("balancer")
        if balancer is not None:
            balancer.tell(Wake(host_id=host_id))

    def _maintain(self, task: Task) -> None:
        name = f"maintenance-{host_of(task)}"
        if self.context.child(name) is None:
            self.context.spawn(MaintenanceRunner, self.services, task, self.scheduler, name=name)

    async def _first_watch(self, before: datetime) -> None:
        try:
            left = (await self._watch(before))[1]
        except CloudcoreError as exc:  # the store: the next try, or the periodic passes
            _log.warning("task.first_watch_failed", error=describe(exc))
            left = 1
        interval = self.services.settings.watchdog_interval
        if left and (datetime.now(UTC) - before).total_seconds() + FIRST_WATCH_DELAY < interval:
            self.context.schedule_once("watchdog-first", FIRST_WATCH_DELAY, _FirstWatch())

    async def _watch(self, before: datetime | None = None) -> tuple[list[str], int]:
        """Resume or settle the undriven tasks (``before``: a first pass, see _FirstWatch):
        the ids of those acted on, and how many were left for a later pass."""
        store, grace = self.services.store, self.services.settings.watchdog_interval
        acted, left = [], 0
        found = undriven(store, self.services.runners, grace, before=before)
        tasks = [t async for t in found if t.id not in self.backlog]  # those will be resumed
        for task in await self._owned(tasks):
            try:
                if await self._revive(task, abandon=before is None):
                    _log.warning(
                        "task.undriven", task_id=task.id, kind=task.kind, subject=task.subject
                    )
                    acted.append(task.id)
                else:
                    left += 1
            except Exception as exc:  # the next round tries again
                _log.error("task.revive_failed", task_id=task.id, error=describe(exc))
        return acted, left

    async def _revive(self, task: Task, *, abandon: bool = True) -> bool:
        """Resume or settle ``task``; False if its VM has no actor here and not ``abandon``."""
        if task.kind == DEPLOY:
            self.backlog[task.id] = task
            self._resume_more()
            return True
        vm = await self.services.store.get(VM, task.subject.removeprefix("vm/"))
        try:
            ref = self.context.system.lookup(f"{self.context.path}/{vm.host_id}/{vm.id}")
        except NotFound:
            if not abandon:
                return False
            await self._abandon(task, vm)
        else:
            await ref.ask(Resume(task_id=task.id), timeout=self.services.settings.step_deadline)
        return True

    async def _abandon(self, task: Task, vm: VM) -> None:
        """A task whose VM no actor here holds: nothing can ask the hypervisor, so it fails and
        the VM, if the task left it between states, goes to ERROR for an operator."""
        fault = f"task {task.id} interrupted and its VM has no actor on this node"
        if vm.task_id == task.id and vm.state not in STABLE:
            failed = {"state": VMState.ERROR, "fault": fault, "task_id": None}
            await self.services.store.update(
                VM, vm.id, expected_version=vm.version, events=state_changed(vm, failed), **failed
            )
        await Journal(self.services.store, task, self.services.waiters).finish(
            TaskState.FAILED, fault
        )

    async def _owned(self, tasks: list[Task]) -> list[Task]:
        """Those of ``tasks`` whose VM is in this datacenter: a read each for one or two, else
        one walk of the datacenter's VMs (after a restart, hundreds of deploys are resumed)."""
        if len(tasks) <= 2:
            return [task for task in tasks if await self._ours(task)]
        where = {"datacenter_id": self.datacenter.id}
        ids = {vm.id async for vm in all_records(self.services.store, VM, where)}
        return [task for task in tasks if task.subject.removeprefix("vm/") in ids]

    async def _ours(self, task: Task) -> bool:
        try:
            vm = await self.services.store.get(VM, task.subject.removeprefix("vm/"))
        except NotFound:
            return False
        return vm.datacenter_id == self.datacenter.id
