"""Migration through the orchestrator between two simulated hosts (libvirt test driver).

The test driver cannot migrate: the libvirt driver's simulated move (define on the target host's
own connection, undefine here) stands in, so what these tests prove is the orchestrator's part:
the target chosen or checked, its capacity held before the move and given back on failure, the
record and claim moved together, the VM's actor handed over to the target host, the step's
progress, and a refusal leaving everything where it was. The hypervisor's part is proved on two
real libvirtd instances in tests/integration/migration.
"""

from __future__ import annotations

import pytest

from actors.guest import domain_spec
from actors.host_lifecycle import HostOperation
from actors.lifecycle import Operation
from actors.messages import GetVM
from actors.operations import MigrateParams
from cloudcore.errors import InvalidRequest, NoValidHost
from cloudcore.store.records import VM, Host, StepState, TaskState, VMSpec, VMState
from hypervisor_drivers.base import GuestPower
from tests.cloud import Cloud

_SPEC = VMSpec(cpus=1, memory_mib=512)


async def _deployed(cloud: Cloud, start: bool = True, spec: VMSpec = _SPEC) -> VM:
    task = await cloud.wait(
        await cloud.orchestrator.deploy(
            tenant_id="demo", datacenter_id="dc1", name="mover", spec=spec, start=start
        )
    )
    assert task.state is TaskState.SUCCEEDED, task.error
    return await cloud.store.get(VM, task.subject.removeprefix("vm/"))


def _other(vm: VM) -> str:
    return "dc1-h2" if vm.host_id == "dc1-h1" else "dc1-h1"


async def _claims(cloud: Cloud) -> dict[str, tuple[int, int]]:
    return {h.id: (h.cpus_used, h.memory_mib_used) for h in (await cloud.store.list(Host)).items}


@pytest.mark.parametrize("start", [True, False], ids=["live", "cold"])
async def test_a_vm_migrates_with_its_claim_and_actor_to_the_other_host(
    cloud: Cloud, start: bool
) -> None:
    vm = await _deployed(cloud, start=start)
    source, target = vm.host_id or "", _other(vm)
    task = await cloud.wait(await cloud.orchestrator.operate(vm.id, Operation.MIGRATE))
    assert task.state is TaskState.SUCCEEDED, task.error
    assert task.data["target"] == target and task.data["live"] is start

    moved = await cloud.store.get(VM, vm.id)
    assert moved.host_id == target
    assert moved.state is (VMState.RUNNING if start else VMState.STOPPED)
    assert await _claims(cloud) == {source: (0, 0), target: (1, 512)}
    expected = GuestPower.RUNNING if start else GuestPower.STOPPED
    assert await cloud.drivers[target].power_state(vm.id) is expected
    assert vm.id not in {v.uuid for v in await cloud.drivers[source].list_vms()}

    actor = cloud.orchestrator.system.lookup(f"/user/dc/dc1/{target}/{vm.id}")
    assert (await actor.ask(GetVM())).host_id == target
    steps = await cloud.store.list_steps(task.id)
    assert [(s.name, s.state) for s in steps] == [("migrate", StepState.DONE)]
    assert steps[0].data["simulated"] is True and steps[0].data["percent"] == 100.0

    # It runs as usual from its new host, and can go back.
    back = MigrateParams(host_id=source)
    task = await cloud.wait(await cloud.orchestrator.operate(vm.id, Operation.MIGRATE, back))
    assert task.state is TaskState.SUCCEEDED, task.error
    assert (await cloud.store.get(VM, vm.id)).host_id == source


async def test_a_target_that_cannot_take_it_is_refused_before_anything_moves(
    cloud: Cloud,
) -> None:
    vm = await _deployed(cloud, spec=VMSpec(cpus=1, memory_mib=3072))
    await _deployed(cloud, spec=VMSpec(cpus=1, memory_mib=3072))  # fills the other host
    before = await _claims(cloud)
    with pytest.raises(NoValidHost):
        await cloud.orchestrator.operate(vm.id, Operation.MIGRATE)
    with pytest.raises(InvalidRequest, match="already"):
        await cloud.orchestrator.operate(
            vm.id, Operation.MIGRATE, MigrateParams(host_id=vm.host_id)
        )
    assert await _claims(cloud) == before
    assert (await cloud.store.get(VM, vm.id)).state is VMState.RUNNING


async def test_a_failed_migration_leaves_the_vm_running_where_it_was_and_gives_the_hold_back(
    cloud: Cloud,
) -> None:
    vm = await _deployed(cloud)
    source, target = vm.host_id or "", _other(vm)
    before = await _claims(cloud)
    # Behind the orchestrator's back, the target already has a VM with this uuid: the
    # hypervisor refuses the move after the hold was taken.
    await cloud.drivers[target].define_vm(domain_spec(vm))
    task = await cloud.wait(await cloud.orchestrator.operate(vm.id, Operation.MIGRATE))
    assert task.state is TaskState.FAILED and "already has" in (task.error or "")
    after = await cloud.store.get(VM, vm.id)
    assert (after.host_id, after.state) == (source, VMState.RUNNING)
    assert after.fault is not None
    assert await _claims(cloud) == before
    assert await cloud.drivers[source].power_state(vm.id) is GuestPower.RUNNING


async def test_a_disabled_target_is_refused(cloud: Cloud) -> None:
    vm = await _deployed(cloud)
    await cloud.orchestrator.set_admin_state(_other(vm), HostOperation.DISABLE)
    with pytest.raises(NoValidHost):
        await cloud.orchestrator.operate(vm.id, Operation.MIGRATE)
    with pytest.raises(Exception, match="DISABLED"):
        await cloud.orchestrator.operate(
            vm.id, Operation.MIGRATE, MigrateParams(host_id=_other(vm))
        )
