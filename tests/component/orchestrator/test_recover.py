"""The operator's recover verbs on a VM in ERROR: retry, succeed, fail, delete."""

from __future__ import annotations

import pytest

from actors.host_lifecycle import HostOperation
from actors.messages import RecoverVerb
from cloudcore.errors import IllegalTransition
from cloudcore.store.records import VM, PowerState, TaskState, VMSpec, VMState
from tests.cloud import Cloud
from tests.waiting import eventually

from .test_lifecycle import deploy


async def _missing(cloud: Cloud) -> VM:
    """A VM the store has RUNNING that vanished from its hypervisor: ERROR after two sweeps."""
    vm = await deploy(cloud)
    host_id = vm.host_id or ""
    await cloud.drivers[host_id].destroy_vm(vm.id)
    for _ in range(2):
        await cloud.orchestrator.sweep("dc1", host_id)

    async def errored() -> VM | None:
        seen = await cloud.store.get(VM, vm.id)
        return seen if seen.state is VMState.ERROR else None

    found: VM = await eventually(errored)
    return found


async def test_retry_of_a_deploy_no_host_could_take_succeeds_once_hosts_are_back(
    cloud: Cloud,
) -> None:
    for host_id in cloud.drivers:
        await cloud.orchestrator.set_admin_state(host_id, HostOperation.DISABLE)
    task = await cloud.orchestrator.deploy(
        tenant_id="demo", datacenter_id="dc1", name="patient", spec=VMSpec(cpus=1, memory_mib=64)
    )
    failed = await cloud.wait(task)
    assert "admin_state rejected 2" in (failed.error or "")
    vm_id = task.subject.removeprefix("vm/")
    assert (await cloud.store.get(VM, vm_id)).state is VMState.ERROR

    for host_id in cloud.drivers:
        await cloud.orchestrator.set_admin_state(host_id, HostOperation.ENABLE)
    retry = await cloud.orchestrator.recover(vm_id, RecoverVerb.RETRY)
    assert retry is not None and retry.id != task.id
    assert (await cloud.wait(retry)).state is TaskState.SUCCEEDED
    vm = await cloud.store.get(VM, vm_id)
    assert (vm.state, vm.fault) == (VMState.RUNNING, None)


async def test_retry_of_a_vm_missing_on_its_hypervisor_provisions_it_again(cloud: Cloud) -> None:
    vm = await _missing(cloud)
    retry = await cloud.orchestrator.recover(vm.id, RecoverVerb.RETRY)
    assert retry is not None
    assert (await cloud.wait(retry)).state is TaskState.SUCCEEDED
    again = await cloud.store.get(VM, vm.id)
    assert (again.state, again.host_id) == (VMState.RUNNING, vm.host_id)
    assert (await cloud.drivers[vm.host_id or ""].get_vm(vm.id)).power.value == "running"


async def test_fail_settles_the_vm_on_what_its_hypervisor_shows(cloud: Cloud) -> None:
    vm = await _missing(cloud)
    assert await cloud.orchestrator.recover(vm.id, RecoverVerb.FAIL) is None
    settled = await cloud.store.get(VM, vm.id)
    assert settled.state is VMState.PLACED  # the hypervisor has no such VM: placed, not defined
    assert (settled.fault or "").startswith("recovered:")


async def test_succeed_takes_the_operators_word_that_the_task_did_its_job(cloud: Cloud) -> None:
    vm = await _missing(cloud)
    assert await cloud.orchestrator.recover(vm.id, RecoverVerb.SUCCEED) is None
    done = await cloud.store.get(VM, vm.id)
    # The deploy's target; if the operator was wrong, the next two sweeps say so again.
    assert (done.state, done.fault, done.power) == (VMState.RUNNING, None, PowerState.ON)


async def test_delete_removes_a_vm_in_error(cloud: Cloud) -> None:
    vm = await _missing(cloud)
    task = await cloud.orchestrator.recover(vm.id, RecoverVerb.DELETE)
    assert task is not None
    assert (await cloud.wait(task)).state is TaskState.SUCCEEDED
    assert (await cloud.store.get(VM, vm.id)).state is VMState.DELETED


async def test_recover_is_refused_for_a_vm_that_is_not_in_error(cloud: Cloud) -> None:
    vm = await deploy(cloud)
    for verb in RecoverVerb:
        with pytest.raises(IllegalTransition, match="RUNNING"):
            await cloud.orchestrator.recover(vm.id, verb)
