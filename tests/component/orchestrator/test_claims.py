"""Host claims through the orchestrator: capacity comes back after a delete without a restart,
a resize moves the host's claim, a delete after a resize releases exactly what the VM holds."""

from __future__ import annotations

import pytest

from actors.lifecycle import Operation
from actors.messages import GetHost
from actors.operations import ReconfigureParams
from cloudcore.errors import InsufficientCapacity
from cloudcore.store.records import VM, Host, Task, TaskState, VMSpec, VMState
from tests.cloud import Cloud

# The demo hosts of the fixture: 4 CPUs (16 allocatable at 4x) and 4096 MiB (1x) each.
_FULL_HOST = VMSpec(cpus=4, memory_mib=4096)


async def _deploy(cloud: Cloud, spec: VMSpec, name: str = "vm") -> Task:
    task = await cloud.orchestrator.deploy(
        tenant_id="demo", datacenter_id="dc1", name=name, spec=spec, start=False
    )
    return await cloud.wait(task)


async def _vm(cloud: Cloud, task: Task) -> VM:
    return await cloud.store.get(VM, task.subject.removeprefix("vm/"))


async def _claim(cloud: Cloud, host_id: str) -> tuple[int, int]:
    host = await cloud.store.get(Host, host_id)
    return host.cpus_used, host.memory_mib_used


async def test_deleted_full_host_vms_give_their_hosts_back_without_a_restart(
    cloud: Cloud,
) -> None:
    for round_ in range(2):
        tasks = [await _deploy(cloud, _FULL_HOST, f"full-{round_}-{n}") for n in range(2)]
        assert [t.state for t in tasks] == [TaskState.SUCCEEDED] * 2, [t.error for t in tasks]
        for task in tasks:
            vm = await _vm(cloud, task)
            done = await cloud.wait(await cloud.orchestrator.operate(vm.id, Operation.DELETE))
            assert done.state is TaskState.SUCCEEDED, done.error
    hosts = (await cloud.store.list(Host)).items
    assert [(h.cpus_used, h.memory_mib_used) for h in hosts] == [(0, 0)] * len(hosts)


async def test_a_grown_vm_moves_its_host_claim_and_its_delete_releases_exactly_that(
    cloud: Cloud,
) -> None:
    vm = await _vm(cloud, await _deploy(cloud, VMSpec(cpus=1, memory_mib=256)))
    host_id = vm.host_id or ""
    assert await _claim(cloud, host_id) == (1, 256)

    grow = await cloud.orchestrator.operate(
        vm.id, Operation.RECONFIGURE, ReconfigureParams(cpus=3, memory_mib=1024)
    )
    assert (await cloud.wait(grow)).state is TaskState.SUCCEEDED
    assert await _claim(cloud, host_id) == (3, 1024)
    host_actor = cloud.orchestrator.system.lookup(f"/user/dc/dc1/{host_id}")
    seen: Host = await host_actor.ask(GetHost())
    assert (seen.cpus_used, seen.memory_mib_used) == (3, 1024)

    shrink = await cloud.orchestrator.operate(
        vm.id, Operation.RECONFIGURE, ReconfigureParams(memory_mib=512)
    )
    assert (await cloud.wait(shrink)).state is TaskState.SUCCEEDED
    assert await _claim(cloud, host_id) == (3, 512)

    delete = await cloud.wait(await cloud.orchestrator.operate(vm.id, Operation.DELETE))
    assert delete.state is TaskState.SUCCEEDED, delete.error
    assert (await cloud.store.get(VM, vm.id)).state is VMState.DELETED
    assert await _claim(cloud, host_id) == (0, 0)


async def test_a_growth_the_host_cannot_take_is_refused_before_any_task(cloud: Cloud) -> None:
    vm = await _vm(cloud, await _deploy(cloud, VMSpec(cpus=1, memory_mib=256)))
    host_id = vm.host_id or ""
    tasks_before = (await cloud.store.list(Task)).items

    with pytest.raises(InsufficientCapacity, match=rf"{host_id}.*3840 MiB free.*7936 more MiB"):
        await cloud.orchestrator.operate(
            vm.id, Operation.RECONFIGURE, ReconfigureParams(memory_mib=8192)
        )

    assert (await cloud.store.list(Task)).items == tasks_before
    assert await _claim(cloud, host_id) == (1, 256)
    assert (await cloud.store.get(VM, vm.id)).spec == vm.spec
    # and a full-host VM still lands on the other host, none on this one
    other = await _vm(cloud, await _deploy(cloud, _FULL_HOST))
    assert other.host_id not in (None, host_id)
