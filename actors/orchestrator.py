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

from actors.datacenter import AddHost, DatacenterActor
from actors.journal import Journal
from actors.lifecycle import Operation, transition
from actors.messages import Deploy, RequestOperation, Sweep, SweepReport
from actors.paging import all_records
from actors.services import Services, new_vm_id
from actors.supervision import DOMAIN_STRATEGY
from cloudcore.errors import Conflict, NotFound
from cloudcore.runtime import Actor, ActorRef, ActorSystem
from cloudcore.store.records import VM, Datacenter, Host, Task, TaskState, VMSpec, VMState

__all__ = ["Orchestrator"]


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
        self._root: ActorRef | None = None

    @classmethod
    async def start(cls, system: ActorSystem, services: Services) -> Orchestrator:
        orchestrator = cls(system, services)
        orchestrator._root = system.spawn(_Group, name="dc")
        async for dc in all_records(services.store, Datacenter):
            orchestrator._spawn_datacenter(dc)
        return orchestrator

    def _spawn_datacenter(self, dc: Datacenter) -> ActorRef:
        assert self._root is not None
        cell = self.system._cell_at(self._root.path)
        return cell.spawn(DatacenterActor, self.services, dc, name=dc.id)

    def datacenter(self, datacenter_id: str) -> ActorRef:
        return self.system.lookup(f"/user/dc/{datacenter_id}")

    async def add_datacenter(self, dc: Datacenter) -> ActorRef:
        """Start managing a datacenter that is in the store."""
        return self._spawn_datacenter(dc)

    async def add_host(self, host: Host) -> ActorRef:
        """Start managing a host that is in the store."""
        ref: ActorRef = await self.datacenter(host.datacenter_id).ask(AddHost(host=host))
        return ref

    async def deploy(
        self,
        *,
        tenant_id: str,
        datacenter_id: str,
        name: str,
        spec: VMSpec,
        start: bool = True,
    ) -> Task:
        """Create a VM and the task that deploys it (schedule, claim, define, start). Returns
        the task at once; ``wait`` for it, or watch the VM's events."""
        # Written RUNNING: this node runs it now, and a crash before it does is resumed like any
        # deploy in flight. (PENDING is for tasks submitted to whichever node picks them up.)
        task = await self.submit_deploy(
            self.store,
            tenant_id=tenant_id,
            datacenter_id=datacenter_id,
            name=name,
            spec=spec,
            start=start,
            state=TaskState.RUNNING,
        )
        self.datacenter(datacenter_id).tell(Deploy(task=task))
        return task

    @staticmethod
    async def submit_deploy(
        store: Any,
        *,
        tenant_id: str,
        datacenter_id: str,
        name: str,
        spec: VMSpec,
        start: bool = True,
        state: TaskState = TaskState.PENDING,
    ) -> Task:
        """Write a VM and its deploy task, PENDING by default, for a running node to pick up."""
        vm = await store.create(
            VM(
                id=new_vm_id(),
                tenant_id=tenant_id,
                datacenter_id=datacenter_id,
                name=name,
                spec=spec,
                desired_state=VMState.RUNNING if start else VMState.STOPPED,
            )
        )
        task = await store.create(
            Task(
                id=f"task-{vm.id}",
                tenant_id=tenant_id,
                kind="vm.deploy",
                subject=f"vm/{vm.id}",
                state=state,
                data={"start": start},
            )
        )
        assert isinstance(task, Task)
        return task

    async def operate(
        self, vm_id: str, operation: Operation, params: dict[str, Any] | None = None
    ) -> Task:
        """Start an operation on a VM; the task at once. IllegalTransition if its state does
        not allow it (the message names the state and what is allowed)."""
        vm = await self.store.get(VM, vm_id)
        if vm.host_id is None:
            return await self._operate_unplaced(vm, operation)
        ref = self.system.lookup(f"/user/dc/{vm.datacenter_id}/{vm.host_id}/{vm.id}")
        task: Task = await ref.ask(RequestOperation(operation=operation, params=params or {}))
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
        await self.store.update(VM, vm.id, expected_version=vm.version, state=VMState.DELETED)
        return await journal.finish(TaskState.SUCCEEDED)

    async def wait(self, task_id: str, timeout: float = 60.0) -> Task:
        """The task once it has ended (TimeoutError after ``timeout`` seconds)."""
        return await self.services.waiters.wait(self.store, task_id, timeout)

    async def get_vm(self, vm_id: str) -> VM:
        return await self.store.get(VM, vm_id)

    async def sweep(self, datacenter_id: str, host_id: str) -> SweepReport:
        """Compare a host's hypervisor with the store now."""
        try:
            ref = self.system.lookup(f"/user/dc/{datacenter_id}/{host_id}")
        except NotFound:
            raise NotFound(f"host {host_id} is not managed in {datacenter_id}") from None
        report: SweepReport = await ref.ask(Sweep(), timeout=60)
        return report
