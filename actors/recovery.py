"""An operator's verdict on a VM in ERROR: retry its failed task, settle it, or delete it.

Routed to the node that runs the VM's datacenter when that is another node; there, a VM on a
host is judged by its VM actor, and one on no host by its record alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.lifecycle import Operation
from actors.messages import Deploy, Recover, RecoverVerb
from actors.operations import decode_params, params_of
from actors.paging import all_records
from actors.routing import RoutedRecover, RoutedReply
from cloudcore.errors import IllegalTransition
from cloudcore.store import Store
from cloudcore.store.records import VM, Task, TaskState, VMState, new_id

if TYPE_CHECKING:
    from actors.orchestrator import Orchestrator

__all__ = ["recover"]


async def recover(orchestrator: Orchestrator, vm_id: str, verb: RecoverVerb) -> Task | None:
    """An operator's verdict on a VM in ERROR: ``retry`` runs its failed task again (the
    task that does is returned), ``succeed`` and ``fail`` settle it (None), ``delete``
    deletes it (the delete task). IllegalTransition if the VM is not in ERROR."""
    vm = await orchestrator.store.get(VM, vm_id)
    port = await orchestrator.port_of(vm.datacenter_id)
    if port is not None:
        reply: RoutedReply = await port.ask(
            RoutedRecover(datacenter_id=vm.datacenter_id, vm_id=vm_id, verb=verb)
        )
        return reply.task
    if vm.state is not VMState.ERROR:
        raise IllegalTransition(f"recover applies to a VM in ERROR; VM {vm_id} is {vm.state}")
    if verb is RecoverVerb.DELETE:
        return await orchestrator.operate(vm_id, Operation.DELETE)
    last = await _last_task(orchestrator.store, vm_id)
    if vm.host_id is not None:
        vm = await orchestrator.vm_ref(vm).ask(Recover(verb=verb, task=last))
    elif verb is RecoverVerb.SUCCEED:
        raise IllegalTransition(
            f"VM {vm_id} is on no host: it can retry, fail or be deleted, not succeed"
        )
    elif verb is RecoverVerb.FAIL:  # on no host there is nothing to settle but the record
        vm = await orchestrator.store.update(
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
        return await orchestrator.operate(vm_id, op, decode_params(op, params_of(op, last.data)))
    if vm.host_id is None:
        vm = await orchestrator.store.update(
            VM, vm.id, expected_version=vm.version, state=VMState.DEFINED, fault=None
        )
    task = await orchestrator.store.create(
        Task(
            id=new_id("task-"),
            tenant_id=vm.tenant_id,
            kind="vm.deploy",
            subject=f"vm/{vm.id}",
            state=TaskState.RUNNING,
            data={"start": vm.desired_state is VMState.RUNNING, "retry_of": last and last.id},
        )
    )
    orchestrator.datacenter(vm.datacenter_id).tell(Deploy(task=task))
    return task


async def _last_task(store: Store, vm_id: str) -> Task | None:
    tasks = [t async for t in all_records(store, Task, {"subject": f"vm/{vm_id}"})]
    return max(tasks, key=lambda t: t.created_at, default=None)
