"""The whole VM lifecycle on the libvirt test driver: every transition, and every illegal one."""

from __future__ import annotations

import pytest

from actors.lifecycle import TRANSITIONS, Operation, allowed_operations
from actors.operations import StopParams, decode_params
from cloudcore.errors import IllegalTransition, InvalidRequest
from cloudcore.store.records import (
    VM,
    Host,
    PowerState,
    StepState,
    Task,
    TaskState,
    VMSpec,
    VMState,
)
from tests.cloud import Cloud
from tests.waiting import eventually


async def deploy(cloud: Cloud, name: str = "web", start: bool = True, cpus: int = 1) -> VM:
    task = await cloud.orchestrator.deploy(
        tenant_id="demo",
        datacenter_id="dc1",
        name=name,
        spec=VMSpec(cpus=cpus, memory_mib=256),
        start=start,
    )
    done = await cloud.wait(task)
    assert done.state is TaskState.SUCCEEDED, done.error
    return await cloud.store.get(VM, task.subject.removeprefix("vm/"))


async def act(cloud: Cloud, vm: VM, op: Operation, **params: object) -> VM:
    task = await cloud.orchestrator.operate(vm.id, op, decode_params(op, params))
    done = await cloud.wait(task)
    assert done.state is TaskState.SUCCEEDED, done.error
    return await cloud.store.get(VM, vm.id)


async def test_deploy_schedules_claims_defines_and_starts_with_every_step_journaled(
    cloud: Cloud,
) -> None:
    vm = await deploy(cloud)
    assert (vm.state, vm.power, vm.task_id) == (VMState.RUNNING, PowerState.ON, None)
    assert vm.host_id is not None
    host = await cloud.store.get(Host, vm.host_id)
    assert (host.cpus_used, host.memory_mib_used) == (1, 256)
    info = await cloud.drivers[vm.host_id].get_vm(vm.id)
    assert info.power.value == "running"
    deploys = await cloud.store.list(Task, where={"subject": f"vm/{vm.id}"})
    [deploy_task] = deploys.items
    steps = await cloud.store.list_steps(deploy_task.id)
    assert [(s.name, s.state) for s in steps] == [
        ("schedule", StepState.DONE),
        ("define", StepState.DONE),
        ("start", StepState.DONE),
    ]


async def test_a_deploy_without_start_leaves_the_vm_stopped(cloud: Cloud) -> None:
    vm = await deploy(cloud, start=False)
    assert (vm.state, vm.power) == (VMState.STOPPED, PowerState.OFF)
    assert (await cloud.drivers[vm.host_id or ""].get_vm(vm.id)).power.value == "stopped"


async def test_every_legal_transition_reaches_its_state_on_the_hypervisor(cloud: Cloud) -> None:
    vm = await deploy(cloud)
    driver = cloud.drivers[vm.host_id or ""]
    path = [
        (Operation.PAUSE, {}, VMState.PAUSED, "paused"),
        (Operation.RESUME, {}, VMState.RUNNING, "running"),
        (Operation.SUSPEND, {}, VMState.SUSPENDED, "suspended"),
        (Operation.RESUME, {}, VMState.RUNNING, "running"),
        (Operation.REBOOT, {}, VMState.RUNNING, "running"),
        (Operation.SNAPSHOT, {"name": "before-upgrade"}, VMState.RUNNING, "running"),
        (Operation.PAUSE, {}, VMState.PAUSED, "paused"),
        (Operation.STOP, {"timeout": 0}, VMState.STOPPED, "stopped"),
        (Operation.RECONFIGURE, {"cpus": 2, "memory_mib": 512}, VMState.STOPPED, "stopped"),
        (Operation.START, {}, VMState.RUNNING, "running"),
        (Operation.STOP, {}, VMState.STOPPED, "stopped"),
    ]
    for op, params, state, power in path:
        vm = await act(cloud, vm, op, **params)
        assert vm.state is state, op
        assert (await driver.get_vm(vm.id)).power.value == power, op
    assert (vm.spec.cpus, vm.spec.memory_mib) == (2, 512)
    assert [s.name for s in await driver.list_snapshots(vm.id)] == ["before-upgrade"]


async def test_delete_destroys_the_vm_and_releases_its_claim(cloud: Cloud) -> None:
    vm = await deploy(cloud)
    host_id = vm.host_id or ""
    vm = await act(cloud, vm, Operation.DELETE)
    assert (vm.state, vm.host_id) == (VMState.DELETED, None)
    host = await cloud.store.get(Host, host_id)
    assert (host.cpus_used, host.memory_mib_used) == (0, 0)
    assert vm.id not in {v.uuid for v in await cloud.drivers[host_id].list_vms()}


@pytest.mark.parametrize(
    "state", [VMState.RUNNING, VMState.STOPPED, VMState.PAUSED, VMState.SUSPENDED]
)
async def test_every_illegal_operation_is_refused_naming_the_state_and_changing_nothing(
    cloud: Cloud, state: VMState
) -> None:
    vm = await deploy(cloud)
    reach = {
        VMState.STOPPED: Operation.STOP,
        VMState.PAUSED: Operation.PAUSE,
        VMState.SUSPENDED: Operation.SUSPEND,
    }
    if state in reach:
        vm = (
            await act(cloud, vm, reach[state], timeout=0)
            if state is VMState.STOPPED
            else (await act(cloud, vm, reach[state]))
        )
    assert vm.state is state
    illegal = [op for op, t in TRANSITIONS.items() if state not in t.sources]
    assert illegal  # every stable state refuses something
    for op in illegal:
        with pytest.raises(IllegalTransition) as caught:
            await cloud.orchestrator.operate(vm.id, op)
        assert str(state) in str(caught.value)
        for allowed in allowed_operations(state):
            assert allowed.value in str(caught.value)
    after = await cloud.store.get(VM, vm.id)
    assert (after.version, after.state) == (vm.version, state)


async def test_a_second_operation_while_one_runs_is_refused_at_once(cloud: Cloud) -> None:
    vm = await deploy(cloud)
    # A graceful stop of a guest without an OS waits for its whole timeout.
    task = await cloud.orchestrator.operate(vm.id, Operation.STOP, StopParams(timeout=1.0))
    with pytest.raises(IllegalTransition, match="STOPPING"):
        await cloud.orchestrator.operate(vm.id, Operation.START)
    done = await cloud.wait(task)
    assert done.state is TaskState.SUCCEEDED
    assert (await cloud.store.get(VM, vm.id)).state is VMState.STOPPED


async def test_bad_operation_parameters_are_refused_before_anything_changes(cloud: Cloud) -> None:
    vm = await deploy(cloud, start=False)
    for op, params, named in [
        (Operation.RECONFIGURE, {"cpus": 0}, "cpus"),
        (Operation.RECONFIGURE, {}, "cpus and/or memory_mib"),
        (Operation.SNAPSHOT, {"name": ""}, "name"),
        (Operation.SNAPSHOT, {}, "name"),
    ]:
        with pytest.raises(InvalidRequest, match=named):
            # No parameters at all go to the VM actor, which refuses them after the state.
            await cloud.orchestrator.operate(
                vm.id, op, decode_params(op, params) if params else None
            )
    assert (await cloud.store.get(VM, vm.id)).version == vm.version


async def test_a_deploy_that_fails_for_good_says_so_with_a_state_event(cloud: Cloud) -> None:
    # Bigger than any demo host (4 CPUs): every attempt finds no host, then the VM goes to ERROR,
    # and the change is written with its vm.state_changed event (the outbox), not silently.
    task = await cloud.orchestrator.deploy(
        tenant_id="demo", datacenter_id="dc1", name="huge", spec=VMSpec(cpus=64, memory_mib=256)
    )
    done = await cloud.wait(task)
    vm_id = task.subject.removeprefix("vm/")
    assert done.state is TaskState.FAILED
    assert (await cloud.store.get(VM, vm_id)).state is VMState.ERROR

    async def error_event() -> bool:
        events = await cloud.orchestrator.services.events.read()
        return any(
            e.type == "vm.state_changed"
            and e.subject == f"vm/{vm_id}"
            and e.data["state"] == "ERROR"
            for e in events
        )

    await eventually(error_event)
