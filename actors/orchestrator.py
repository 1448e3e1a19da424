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

from typing import Any

from actors import claims
from actors.datacenter import AddHost, DatacenterActor, DatacenterMessage
from actors.host import HostMessage
from actors.journal import Journal
from actors.lifecycle import Operation, transition
from actors.messages import (
    Deploy,
    GetConsole,
    ListSnapshots,
    Recover,
    RecoverVerb,
    RequestOperation,
    Snapshot,
    Sweep,
    SweepReport,
)
from actors.operations import OperationParams, decode_params
from actors.paging import all_records
from actors.quotas import vm_usage
from actors.registration import update_host
from actors.scheduler.messages import HostUpdated
from actors.services import Services
from actors.supervision import DOMAIN_STRATEGY
from actors.vm import VMMessage
from cloudcore.errors import Conflict, IllegalTransition, NotFound
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, ActorSystem
from cloudcore.store import Store
from cloudcore.store.records import (
    VM,
    AdminState,
    Datacenter,
    Host,
    IdempotencyKey,
    OutboxEvent,
    Task,
    TaskState,
    VMSpec,
    VMState,
    new_id,
)
from hypervisor_drivers.types import ConsoleEndpoint

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

    @classmethod
    async def start(
        cls, system: ActorSystem, services: Services, datacenter: str | None = None
    ) -> Orchestrator:
        """Run the actors of every datacenter in the store, or of ``datacenter`` alone: a node
        whose capabilities name a datacenter serves that one (the remote-service node next to
        its hypervisors). Deploys submitted on any node reach it through the store's tasks."""
        orchestrator = cls(system, services)
        orchestrator._root = system.spawn(_Group, name="dc")
        async for dc in all_records(services.store, Datacenter):
            if datacenter is None or dc.id == datacenter:
                orchestrator._spawn_datacenter(dc)
        return orchestrator

    def _spawn_datacenter(self, dc: Datacenter) -> ActorRef[DatacenterMessage]:
        assert self._root is not None
        return self.system.spawn_under(
            self._root.path, DatacenterActor, self.services, dc, name=dc.id
        )

    def datacenter(self, datacenter_id: str) -> ActorRef[DatacenterMessage]:
        """The actor of a datacenter run on this node; NotFound if it runs elsewhere."""
        ref: ActorRef[DatacenterMessage] = self.system.lookup(f"/user/dc/{datacenter_id}")
        return ref

    async def add_datacenter(self, dc: Datacenter) -> ActorRef[DatacenterMessage]:
        """Start managing a datacenter that is in the store."""
        return self._spawn_datacenter(dc)

    async def add_host(self, host: Host) -> ActorRef[HostMessage]:
        """Start managing a host that is in the store."""
        ref: ActorRef[HostMessage] = await self.datacenter(host.datacenter_id).ask(
            AddHost(host=host)
        )
        return ref

    async def set_admin_state(self, host_id: str, state: AdminState) -> Host:
        """Enable, disable or put a host in maintenance: the scheduler stops or resumes
        placing VMs on it at once. VMs already there stay."""
        changed = OutboxEvent(
            type="host.admin_state_changed",
            subject=f"host/{host_id}",
            data={"admin_state": str(state)},
        )
        host = await self.store.get(Host, host_id)
        host = await update_host(self.store, host, events=[changed], admin_state=state)
        try:
            scheduler = self.system.lookup(f"/user/dc/{host.datacenter_id}/scheduler")
        except NotFound:  # the datacenter runs on another node: stored, its scheduler not told
            _log.warning("host.admin_state_not_told", host_id=host_id, state=str(state))
        else:
            scheduler.tell(HostUpdated(host=host))
        return host

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
        # Written RUNNING when this node runs the datacenter: a crash before it starts is
        # resumed like any deploy in flight. Otherwise PENDING, for the node that runs it.
        try:
            datacenter: ActorRef[DatacenterMessage] | None = self.datacenter(datacenter_id)
        except NotFound:
            await self.store.get(Datacenter, datacenter_id)  # NotFound names a wrong id
            datacenter = None
        vm, task = await _write_deploy(
            self.store,
            tenant_id=tenant_id,
            datacenter_id=datacenter_id,
            name=name,
            spec=spec,
            start=start,
            state=TaskState.PENDING if datacenter is None else TaskState.RUNNING,
            claim=claim,
            mac_prefix=mac_prefix,
        )
        if datacenter is not None:
            datacenter.tell(Deploy(task=task, vm=vm))
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
        task: Task = await self._vm_ref(vm).ask(
            RequestOperation(operation=operation, params=params)
        )
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

    async def recover(self, vm_id: str, verb: RecoverVerb) -> Task | None:
        """An operator's verdict on a VM in ERROR: ``retry`` runs its failed task again (the
        task that does is returned), ``succeed`` and ``fail`` settle it (None), ``delete``
        deletes it (the delete task). IllegalTransition if the VM is not in ERROR."""
        vm = await self.store.get(VM, vm_id)
        if vm.state is not VMState.ERROR:
            raise IllegalTransition(f"recover applies to a VM in ERROR; VM {vm_id} is {vm.state}")
        if verb is RecoverVerb.DELETE:
            return await self.operate(vm_id, Operation.DELETE)
        last = await self._last_task(vm_id)
        if vm.host_id is not None:
            vm = await self._vm_ref(vm).ask(Recover(verb=verb, task=last))
        elif verb is RecoverVerb.SUCCEED:
            raise IllegalTransition(
                f"VM {vm_id} is on no host: it can retry, fail or be deleted, not succeed"
            )
        elif verb is RecoverVerb.FAIL:  # on no host there is nothing to settle but the record
            vm = await self.store.update(
                VM,
                vm.id,
                expected_version=vm.version,
                state=VMState.DEFINED,
                fault=f"recovered: {vm.fault}",
            )
        if verb is not RecoverVerb.RETRY:
            return None
        redeploy = last is None or last.kind == "vm.deploy" or vm.state is VMState.PLACED
        if not redeploy and last is not None:
            op = Operation(last.kind.removeprefix("vm."))
            return await self.operate(vm_id, op, decode_params(op, last.data))
        if vm.host_id is None:
            vm = await self.store.update(
                VM, vm.id, expected_version=vm.version, state=VMState.DEFINED, fault=None
            )
        task = await self.store.create(
            Task(
                id=new_id("task-"),
                tenant_id=vm.tenant_id,
                kind="vm.deploy",
                subject=f"vm/{vm.id}",
                state=TaskState.RUNNING,
                data={"start": vm.desired_state is VMState.RUNNING, "retry_of": last and last.id},
            )
        )
        self.datacenter(vm.datacenter_id).tell(Deploy(task=task))
        return task

    async def _last_task(self, vm_id: str) -> Task | None:
        tasks = [t async for t in all_records(self.store, Task, {"subject": f"vm/{vm_id}"})]
        return max(tasks, key=lambda t: t.created_at, default=None)

    def _vm_ref(self, vm: VM) -> ActorRef[VMMessage]:
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
        ref = self.system.lookup(f"/user/dc/{vm.datacenter_id}/{vm.host_id}")
        found: list[Snapshot] = await ref.ask(ListSnapshots(vm_id=vm.id))
        return found

    async def console(self, vm: VM) -> ConsoleEndpoint:
        """Where ``vm``'s graphical console listens, asked of its host's actor (on the node
        that runs the host). IllegalTransition unless the VM runs; UnsupportedOperation when
        its host's driver has no consoles; NotFound when the host is not managed here."""
        if vm.host_id is None or vm.state not in _CONSOLE_STATES:
            raise IllegalTransition(
                f"VM {vm.id} is {vm.state}: a console needs it RUNNING or PAUSED"
            )
        try:
            ref = self.system.lookup(f"/user/dc/{vm.datacenter_id}/{vm.host_id}")
        except NotFound:
            raise NotFound(f"host {vm.host_id} is not managed on this node") from None
        endpoint: ConsoleEndpoint = await ref.ask(GetConsole(vm_id=vm.id))
        return endpoint

    async def sweep(self, datacenter_id: str, host_id: str) -> SweepReport:
        """Compare a host's hypervisor with the store now."""
        try:
            ref = self.system.lookup(f"/user/dc/{datacenter_id}/{host_id}")
        except NotFound:
            raise NotFound(f"host {host_id} is not managed in {datacenter_id}") from None
        report: SweepReport = await ref.ask(Sweep(), timeout=60)
        return report


async def _write_deploy(
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
