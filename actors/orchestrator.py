"""The orchestrator's Python API: deploy VMs, operate them, wait for tasks, sweep hosts.

It builds the actor tree from the store::

    /user/dc                       supervisor of the datacenters
    /user/dc/<datacenter id>       DatacenterActor
        scheduler                  SchedulerActor
        <host id>                  HostActor
            <vm id>                VMActor
        deploy-<task id>           DeployRunner

and is what the HTTP gateway, the CLI and embedding programs call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from actors import claims
from actors.balancer import BalancePlan, BalancePolicy, plan
from actors.balancing import Rebalance, datacenter_load, store_policy
from actors.datacenter import AddHost, DatacenterActor, DatacenterMessage, Maintain
from actors.deploy import write_deploy as _write_deploy
from actors.host import HostMessage
from actors.host_lifecycle import HostOperation, host_transition
from actors.journal import FINAL, Journal
from actors.lifecycle import Operation, transition
from actors.maintenance import MAINTENANCE, change_admin_state
from actors.messages import (
    AbortTask,
    Deploy,
    GetConsole,
    ListSnapshots,
    RecoverVerb,
    RequestOperation,
    SetHA,
    Snapshot,
    Sweep,
    SweepReport,
)
from actors.operations import MigrateParams, OperationParams
from actors.paging import all_records
from actors.recovery import recover
from actors.routing import (
    PortMessage,
    RoutedAbort,
    RoutedAddHost,
    RoutedAdminState,
    RoutedConsole,
    RoutedDeploy,
    RoutedMaintain,
    RoutedOperate,
    RoutedReply,
    RoutedSetHA,
    RoutedSnapshots,
    RoutedSweep,
    Routes,
)
from actors.scheduler.messages import HostUpdated
from actors.services import Services
from actors.supervision import DOMAIN_STRATEGY
from actors.vm import VMMessage
from cloudcore.errors import (
    CloudcoreError,
    Conflict,
    DatacenterUnavailable,
    IllegalTransition,
    NotFound,
)
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, ActorSystem
from cloudcore.store import Store
from cloudcore.store.records import (
    VM,
    Datacenter,
    Host,
    IdempotencyKey,
    Task,
    TaskState,
    VMSpec,
    VMState,
)
from hypervisor_drivers.types import ConsoleEndpoint, ConsoleKind

if TYPE_CHECKING:
    from actors.storage import StorageService

__all__ = ["Orchestrator"]

_log = get_logger("actors.orchestrator")
_CONSOLE_STATES = frozenset({VMState.RUNNING, VMState.PAUSED})


class _Group(Actor[Any]):
    """A node of the tree that only supervises."""

    supervisor_strategy = DOMAIN_STRATEGY

    async def receive(self, message: Any) -> None:
        raise TypeError(f"{self.context.path} takes no messages")


class Orchestrator:
    """Start with ``await Orchestrator.start(system, services)``; stop with the system."""

    def __init__(self, system: ActorSystem, services: Services) -> None:
        self.system = system
        self.services = services
        self.store = services.store
        self._root: ActorRef[Any] | None = None
        #: The storage pools and volumes this node runs (None: none started).
        self.storage: StorageService | None = None
        self._balanced: dict[str, float] = {}  # VM id: when a balance last moved it
        self._started_dcs: set[str] = set()
        #: Datacenters dropped whose actor may still be stopping (a slow stop outlived the
        #: drop's wait): a new run waits for it, else the old one would stand for it and go.
        self._dropped: dict[str, ActorRef[Any]] = {}
        #: Takes a new datacenter's lease (set when the node runs datacenters by lease).
        self.claim: Callable[[str], Awaitable[bool]] | None = None
        #: Where datacenters that run on other nodes are (set on a node of a cluster): their
        #: operations are routed there. None: only this node's datacenters are operated.
        self.routes: Routes | None = None

    async def port_of(self, datacenter_id: str) -> ActorRef[PortMessage] | None:
        """The port of the node that runs ``datacenter_id`` if that is another one (None:
        here, or no routes); DatacenterUnavailable if its owner is down."""
        if self.routes is None or self.runs(datacenter_id):
            return None
        return await self.routes.port(datacenter_id)

    @classmethod
    async def start(
        cls,
        system: ActorSystem,
        services: Services,
        datacenter: str | None = None,
        *,
        spawn: bool = True,
    ) -> Orchestrator:
        """Run the actors of every datacenter in the store, or of those ``datacenter`` names
        (comma-separated): a node whose capabilities name datacenters serves those (the
        remote-service node next to its hypervisors). Deploys submitted on any node reach it
        through the store's tasks.

        ``spawn=False``: none yet; the node's leases (:mod:`actors.ownership`) start each with
        :meth:`run_datacenter` once this node holds it, and set :attr:`claim`."""
        orchestrator = cls(system, services)
        orchestrator._root = system.spawn(_Group, name="dc")
        if spawn:
            async for dc in all_records(services.store, Datacenter):
                if datacenter is None or dc.id in datacenter.split(","):
                    orchestrator._spawn_datacenter(dc)
        return orchestrator

    def _spawn_datacenter(self, dc: Datacenter) -> ActorRef[DatacenterMessage]:
        assert self._root is not None
        self._started_dcs.add(dc.id)
        return self.system.spawn_under(
            self._root.path, DatacenterActor, self.services, dc, name=dc.id
        )

    def running(self) -> list[str]:
        """The datacenters whose actors run on this node now, by id."""
        return sorted(dc for dc in self._started_dcs if self.runs(dc))

    def runs(self, datacenter_id: str) -> bool:
        """Whether this node runs the datacenter's actors now."""
        try:
            self.datacenter(datacenter_id)
        except NotFound:
            return False
        return True

    async def run_datacenter(self, datacenter_id: str, timeout: float = 10.0) -> None:
        """Start the actors of a datacenter of the store (this node now owns it), once its
        actors of an earlier run, if still stopping, have ended (TimeoutError if they do not
        within ``timeout``: the caller tries again later)."""
        dropped = self._dropped.get(datacenter_id)
        if dropped is not None:
            async with asyncio.timeout(timeout):
                await dropped.stopped()
            if self._dropped.get(datacenter_id) is dropped:
                del self._dropped[datacenter_id]
        if not self.runs(datacenter_id):
            self._spawn_datacenter(await self.store.get(Datacenter, datacenter_id))

    async def drop_datacenter(self, datacenter_id: str, timeout: float = 10.0) -> None:
        """Stop the actors of a datacenter (this node no longer owns it). Their tasks stay
        RUNNING in the store, for the next owner's watchdog to resume or settle."""
        try:
            ref = self.datacenter(datacenter_id)
        except NotFound:
            return
        ref.stop()
        self._dropped[datacenter_id] = ref
        try:
            async with asyncio.timeout(timeout):
                await ref.stopped()
        except TimeoutError:
            _log.error("datacenter.stop_slow", datacenter=datacenter_id, seconds=timeout)

    def datacenter(self, datacenter_id: str) -> ActorRef[DatacenterMessage]:
        """The actor of a datacenter run on this node; NotFound if it runs elsewhere."""
        ref: ActorRef[DatacenterMessage] = self.system.lookup(f"/user/dc/{datacenter_id}")
        return ref

    async def add_datacenter(self, dc: Datacenter) -> None:
        """Start managing a datacenter that is in the store: here, or (with leases) on the
        node that takes its lease."""
        if self.claim is not None:
            await self.claim(dc.id)
        elif not self.runs(dc.id):
            self._spawn_datacenter(dc)

    async def add_host(self, host: Host) -> ActorRef[HostMessage] | None:
        """Start managing a host that is in the store: its actor's ref, or None if its
        datacenter runs on another node (told there; if that node is down, it manages the host
        from its next start)."""
        try:
            port = await self.port_of(host.datacenter_id)
        except DatacenterUnavailable as exc:
            _log.warning("host.registered_unowned", host_id=host.id, error=str(exc))
            return None
        if port is not None:
            await port.ask(RoutedAddHost(datacenter_id=host.datacenter_id, host_id=host.id))
            return None
        ref: ActorRef[HostMessage] = await self.datacenter(host.datacenter_id).ask(
            AddHost(host=host)
        )
        return ref

    async def set_admin_state(self, host_id: str, operation: HostOperation) -> Host:
        """Enable or disable a host, or cancel its maintenance: the scheduler stops or resumes
        placing VMs on it at once. VMs already there stay. IllegalTransition naming what is
        allowed when its admin state does not permit it (maintenance: :meth:`maintain`).
        Routed to the node that runs the host's datacenter if that is another one."""
        stored = await self.store.get(Host, host_id)
        port = await self.port_of(stored.datacenter_id)
        if port is not None:
            reply: RoutedReply = await port.ask(
                RoutedAdminState(
                    datacenter_id=stored.datacenter_id, host_id=host_id, operation=operation
                )
            )
            assert reply.host is not None
            return reply.host
        host = await change_admin_state(self.store, host_id, operation)
        self._tell_scheduler(host)
        return host

    async def maintain(self, host_id: str) -> Task:
        """Put a host in maintenance: PREPARING_FOR_MAINTENANCE at once (no new VMs), then a
        task drains it by migration (MAINTENANCE, or ERROR_IN_MAINTENANCE naming the VMs that
        stay and why). Returns the task. IllegalTransition if the host's state does not allow
        it. Routed to the node that runs the host's datacenter if that is another one."""
        host = await self.store.get(Host, host_id)
        port = await self.port_of(host.datacenter_id)
        if port is not None:
            reply: RoutedReply = await port.ask(
                RoutedMaintain(datacenter_id=host.datacenter_id, host_id=host_id)
            )
            assert reply.task is not None
            return reply.task
        datacenter = self.datacenter(host.datacenter_id)
        host_transition(HostOperation.MAINTAIN, host.admin_state, host_id)  # refused before a task
        journal = await Journal.begin(
            self.store,
            kind=MAINTENANCE,
            subject=f"host/{host_id}",
            tenant_id=None,
            data={"host_id": host_id, "concurrency": self.services.settings.drain_concurrency},
            waiters=self.services.waiters,
        )
        try:
            host = await change_admin_state(self.store, host_id, HostOperation.MAINTAIN)
        except Exception as exc:
            await journal.finish(TaskState.FAILED, str(exc))
            raise
        self._tell_scheduler(host)
        datacenter.tell(Maintain(task=journal.task))
        return journal.task

    def _tell_scheduler(self, host: Host) -> None:
        try:
            scheduler = self.system.lookup(f"/user/dc/{host.datacenter_id}/scheduler")
        except NotFound:  # the datacenter runs on another node: stored, its scheduler not told
            _log.warning("host.admin_state_not_told", host_id=host.id, state=str(host.admin_state))
        else:
            scheduler.tell(HostUpdated(host=host))

    async def deploy(
        self,
        *,
        tenant_id: str,
        datacenter_id: str,
        name: str,
        spec: VMSpec,
        start: bool = True,
        claim: IdempotencyKey | None = None,
        mac_prefix: str | None = None,
    ) -> Task:
        """Create a VM and the task that deploys it (schedule, claim, define, start). Returns
        the task at once; ``wait`` for it, or watch the VM's events. ``claim``: the
        Idempotency-Key the create was asked under; ``mac_prefix``: of its NICs' MACs (see
        :meth:`Store.create_vm`)."""
        # Written RUNNING when this node, or the owner it is routed to, runs the datacenter: a
        # crash or a lost message before it starts is resumed like any deploy in flight (by the
        # owner's watchdog). Otherwise PENDING, for the node that runs it to claim.
        try:
            datacenter: ActorRef[DatacenterMessage] | None = self.datacenter(datacenter_id)
        except NotFound:
            await self.store.get(Datacenter, datacenter_id)  # NotFound names a wrong id
            datacenter = None
        port = await self.port_of(datacenter_id)  # refused before anything is written
        vm, task = await _write_deploy(
            self.store,
            tenant_id=tenant_id,
            datacenter_id=datacenter_id,
            name=name,
            spec=spec,
            start=start,
            state=TaskState.PENDING if datacenter is None and port is None else TaskState.RUNNING,
            claim=claim,
            mac_prefix=mac_prefix,
        )
        if datacenter is not None:
            datacenter.tell(Deploy(task=task, vm=vm))
        elif port is not None:
            port.tell(RoutedDeploy(datacenter_id=datacenter_id, task=task, vm=vm))
        return task

    @staticmethod
    async def submit_deploy(
        store: Store,
        *,
        tenant_id: str,
        datacenter_id: str,
        name: str,
        spec: VMSpec,
        start: bool = True,
    ) -> Task:
        """Write a VM and its deploy task, PENDING, for a running node to pick up."""
        _, task = await _write_deploy(
            store,
            tenant_id=tenant_id,
            datacenter_id=datacenter_id,
            name=name,
            spec=spec,
            start=start,
            state=TaskState.PENDING,
        )
        return task

    async def operate(
        self, vm_id: str, operation: Operation, params: OperationParams | None = None
    ) -> Task:
        """Start an operation on a VM; the task at once. IllegalTransition if its state does
        not allow it (the message names the state and what is allowed); InvalidRequest if
        ``params`` are not ``operation``'s, or are None and it needs some (checked after the
        state). None: the operation's defaults."""
        vm = await self.store.get(VM, vm_id)
        if vm.host_id is None:
            return await self._operate_unplaced(vm, operation)
        port = await self.port_of(vm.datacenter_id)
        if port is not None:
            reply: RoutedReply = await port.ask(
                RoutedOperate(
                    datacenter_id=vm.datacenter_id,
                    vm_id=vm_id,
                    operation=operation,
                    params=params,
                    host_id=vm.host_id,
                )
            )
            assert reply.task is not None
            return reply.task
        task: Task = await self.vm_ref(vm).ask(RequestOperation(operation=operation, params=params))
        return task

    async def _operate_unplaced(self, vm: VM, operation: Operation) -> Task:
        """A VM on no host can only be deleted, which touches the store alone."""
        transition(operation, vm.state, vm.id)
        if operation is not Operation.DELETE or vm.task_id is not None:
            raise Conflict(f"VM {vm.id} is on no host: it can only be deleted")
        journal = await Journal.begin(
            self.store,
            kind="vm.delete",
            subject=f"vm/{vm.id}",
            tenant_id=vm.tenant_id,
            waiters=self.services.waiters,
        )
        await claims.delete(self.store, vm, None)  # on no host: its quota alone goes back
        return await journal.finish(TaskState.SUCCEEDED)

    async def abort(self, task_id: str, reason: str = "aborted by an operator") -> Task:
        """Stop a migration in flight: the hypervisor aborts it and the VM stays where it was,
        running if it was; the task ends FAILED with ``reason`` (wait for it). Returns the task
        as it is now. Conflict if the task has ended or is not a migration (only a migration
        can be stopped half-way and leave its VM whole)."""
        task = await self.store.get(Task, task_id)
        if task.state in FINAL:
            raise Conflict(f"task {task_id} has ended ({task.state}): nothing to abort")
        if task.kind != "vm.migrate":
            raise Conflict(f"task {task_id} is a {task.kind}: only a migration can be aborted")
        vm = await self.store.get(VM, task.subject.removeprefix("vm/"))
        port = await self.port_of(vm.datacenter_id)
        if port is not None:
            reply: RoutedReply = await port.ask(
                RoutedAbort(datacenter_id=vm.datacenter_id, task_id=task_id, reason=reason)
            )
            assert reply.task is not None
            return reply.task
        await self.vm_ref(vm).ask(AbortTask(task_id=task_id, reason=reason))
        _log.warning("task.abort_requested", task_id=task_id, vm_id=vm.id, reason=reason)
        return await self.store.get(Task, task_id)

    async def balance_plan(
        self, datacenter_id: str, policy: BalancePolicy, *, threshold: float, max_moves: int
    ) -> BalancePlan:
        """The migrations ``policy`` would make in the datacenter now, explained; nothing moves.
        VMs a balance moved within ``orchestrator.balance_cooldown`` seconds stay put."""
        now, cooldown = time.monotonic(), self.services.settings.balance_cooldown
        self._balanced = {v: t for v, t in self._balanced.items() if now - t < cooldown}
        await self.store.get(Datacenter, datacenter_id)
        hosts, vms = await datacenter_load(self.store, datacenter_id)
        recent = frozenset(self._balanced)
        return plan(hosts, vms, policy, threshold=threshold, max_moves=max_moves, recent=recent)

    async def set_balance_policy(self, datacenter_id: str, policy: BalancePolicy) -> Datacenter:
        """The policy the datacenter's balancer applies from its next round (run at once when
        the datacenter runs on this node). NotFound."""
        dc = await store_policy(self.store, datacenter_id, policy)
        with contextlib.suppress(NotFound):
            self.system.lookup(f"/user/dc/{datacenter_id}/balancer").tell(Rebalance())
        return dc

    async def balance(
        self, datacenter_id: str, policy: BalancePolicy, *, threshold: float, max_moves: int
    ) -> tuple[BalancePlan, list[Task]]:
        """Make the plan's migrations (each a ``vm.migrate`` task); the plan and the tasks
        begun (a move refused now, e.g. its VM busy, is left out)."""
        made = await self.balance_plan(
            datacenter_id, policy, threshold=threshold, max_moves=max_moves
        )
        tasks = []
        for move in made.moves:
            try:
                params = MigrateParams(host_id=move.target)
                tasks.append(await self.operate(move.vm_id, Operation.MIGRATE, params))
            except CloudcoreError as exc:
                _log.warning("balance.move_refused", vm_id=move.vm_id, error=str(exc))
                continue
            self._balanced[move.vm_id] = time.monotonic()
        return made, tasks

    async def set_ha(self, vm_id: str, ha: bool, priority: int) -> VM:
        """Whether HA restarts the VM elsewhere when its host fails, and how early. Conflict
        while an operation runs on it."""
        vm = await self.store.get(VM, vm_id)
        if vm.host_id is None:  # no actor owns it: the record alone (resize keeps its claim)
            spec = msgspec.structs.replace(vm.spec, ha=ha, ha_priority=priority)
            return await self.store.resize_vm(vm.id, spec, expected_version=vm.version)
        port = await self.port_of(vm.datacenter_id)
        if port is not None:
            reply: RoutedReply = await port.ask(
                RoutedSetHA(datacenter_id=vm.datacenter_id, vm_id=vm_id, ha=ha, priority=priority)
            )
            assert reply.vm is not None
            return reply.vm
        changed: VM = await self.vm_ref(vm).ask(SetHA(ha=ha, priority=priority))
        return changed

    async def recover(self, vm_id: str, verb: RecoverVerb) -> Task | None:
        """An operator's verdict on a VM in ERROR (see :func:`actors.recovery.recover`)."""
        return await recover(self, vm_id, verb)

    def placed(
        self, datacenter_id: str, host_id: str | None, vm_id: str
    ) -> ActorRef[VMMessage] | None:
        """The actor of a VM on ``host_id`` of a datacenter run here, if it is there now."""
        if host_id is None:
            return None
        try:
            ref: ActorRef[VMMessage] = self.system.lookup(
                f"/user/dc/{datacenter_id}/{host_id}/{vm_id}"
            )
        except NotFound:
            return None
        return ref

    def vm_ref(self, vm: VM) -> ActorRef[VMMessage]:
        ref: ActorRef[VMMessage] = self.system.lookup(
            f"/user/dc/{vm.datacenter_id}/{vm.host_id}/{vm.id}"
        )
        return ref

    async def wait(self, task_id: str, timeout: float = 60.0) -> Task:
        """The task once it has ended (TimeoutError after ``timeout`` seconds)."""
        return await self.services.waiters.wait(self.store, task_id, timeout)

    async def get_vm(self, vm_id: str) -> VM:
        return await self.store.get(VM, vm_id)

    async def snapshots(self, vm: VM) -> list[Snapshot]:
        """The VM's snapshots as its hypervisor has them, oldest first. Conflict for a VM on
        no host; UnsupportedOperation when its driver cannot snapshot."""
        if vm.host_id is None:
            raise Conflict(f"VM {vm.id} is on no host: it has no snapshots")
        port = await self.port_of(vm.datacenter_id)
        if port is not None:
            reply: RoutedReply = await port.ask(
                RoutedSnapshots(datacenter_id=vm.datacenter_id, vm_id=vm.id)
            )
            return reply.snapshots or []
        ref = self.system.lookup(f"/user/dc/{vm.datacenter_id}/{vm.host_id}")
        found: list[Snapshot] = await ref.ask(ListSnapshots(vm_id=vm.id))
        return found

    async def console(self, vm: VM, kind: ConsoleKind = ConsoleKind.VNC) -> ConsoleEndpoint:
        """Where ``vm``'s ``kind`` console is, asked of its host's actor (on the node
        that runs the host). IllegalTransition unless the VM runs; UnsupportedOperation when
        its host's driver has no consoles; NotFound when the host is not managed here."""
        if vm.host_id is None or vm.state not in _CONSOLE_STATES:
            raise IllegalTransition(
                f"VM {vm.id} is {vm.state}: a console needs it RUNNING or PAUSED"
            )
        port = await self.port_of(vm.datacenter_id)
        if port is not None:
            reply: RoutedReply = await port.ask(
                RoutedConsole(datacenter_id=vm.datacenter_id, vm_id=vm.id, kind=kind)
            )
            assert reply.console is not None
            return reply.console
        try:
            ref = self.system.lookup(f"/user/dc/{vm.datacenter_id}/{vm.host_id}")
        except NotFound:
            raise NotFound(f"host {vm.host_id} is not managed on this node") from None
        endpoint: ConsoleEndpoint = await ref.ask(GetConsole(vm_id=vm.id, kind=kind))
        return endpoint

    async def sweep(self, datacenter_id: str, host_id: str) -> SweepReport:
        """Compare a host's hypervisor with the store now."""
        port = await self.port_of(datacenter_id)
        if port is not None:
            reply: RoutedReply = await port.ask(
                RoutedSweep(datacenter_id=datacenter_id, host_id=host_id), timeout=60
            )
            assert reply.report is not None
            return reply.report
        try:
            ref = self.system.lookup(f"/user/dc/{datacenter_id}/{host_id}")
        except NotFound:
            raise NotFound(f"host {host_id} is not managed in {datacenter_id}") from None
        report: SweepReport = await ref.ask(Sweep(), timeout=60)
        return report
