"""Define, list, start, stop, reboot, pause, suspend, destroy: semantics, idempotency, errors."""

from __future__ import annotations

import uuid

import pytest

from cloudcore.errors import Conflict, IllegalTransition, NotFound
from hypervisor_drivers.base import Capability, GuestPower, StopOutcome
from tests.contract.hypervisor.harness import Harness


async def test_a_defined_vm_is_listed_stopped_with_its_size(harness: Harness) -> None:
    spec = await harness.define(vcpus=2, memory_mib=256)
    vm = await harness.driver.get_vm(spec.uuid)
    assert (vm.uuid, vm.name, vm.power, vm.vcpus, vm.memory_mib) == (
        spec.uuid,
        spec.name,
        GuestPower.STOPPED,
        2,
        256,
    )
    assert vm in await harness.driver.list_vms()


async def test_defining_the_same_uuid_again_replaces_the_definition(harness: Harness) -> None:
    spec = await harness.define(vcpus=1)
    await harness.driver.define_vm(harness.spec(uuid=spec.uuid, name=spec.name, vcpus=3))
    assert (await harness.driver.get_vm(spec.uuid)).vcpus == 3
    assert [vm.uuid for vm in await harness.driver.list_vms()].count(spec.uuid) == 1


async def test_a_name_taken_by_another_vm_is_a_conflict(harness: Harness) -> None:
    spec = await harness.define()
    with pytest.raises(Conflict):
        await harness.driver.define_vm(harness.spec(name=spec.name))


async def test_an_unknown_vm_is_not_found(harness: Harness) -> None:
    missing = str(uuid.uuid4())
    for call in (
        harness.driver.get_vm(missing),
        harness.driver.power_state(missing),
        harness.driver.start_vm(missing),
        harness.driver.stop_vm(missing, timeout=0),
    ):
        with pytest.raises(NotFound):
            await call


async def test_destroy_removes_the_vm_and_is_idempotent(harness: Harness) -> None:
    stopped = await harness.define()
    running = await harness.running()
    for spec in (stopped, running):
        await harness.driver.destroy_vm(spec.uuid)
        await harness.driver.destroy_vm(spec.uuid)
        with pytest.raises(NotFound):
            await harness.driver.get_vm(spec.uuid)
    await harness.driver.destroy_vm(str(uuid.uuid4()))
    assert await harness.driver.list_vms() == []


async def test_start_runs_the_vm_and_is_idempotent(harness: Harness) -> None:
    spec = await harness.define()
    await harness.driver.start_vm(spec.uuid)
    await harness.driver.start_vm(spec.uuid)
    assert await harness.driver.power_state(spec.uuid) is GuestPower.RUNNING


async def test_stop_with_zero_timeout_forces_and_stop_of_a_stopped_vm_is_a_no_op(
    harness: Harness,
) -> None:
    spec = await harness.running()
    assert await harness.driver.stop_vm(spec.uuid, timeout=0) is StopOutcome.FORCED
    assert await harness.driver.power_state(spec.uuid) is GuestPower.STOPPED
    assert await harness.driver.stop_vm(spec.uuid, timeout=0) is StopOutcome.ALREADY_STOPPED


async def test_stop_with_a_deadline_ends_stopped(harness: Harness) -> None:
    spec = await harness.running()
    outcome = await harness.driver.stop_vm(spec.uuid, timeout=2)
    expected = {StopOutcome.GRACEFUL, StopOutcome.FORCED}
    if not harness.driver.supports(Capability.GRACEFUL_STOP):
        expected = {StopOutcome.FORCED}
    assert outcome in expected
    assert await harness.driver.power_state(spec.uuid) is GuestPower.STOPPED


async def test_pause_and_unpause_are_idempotent(harness: Harness) -> None:
    harness.needs(Capability.PAUSE)
    spec = await harness.running()
    await harness.driver.pause_vm(spec.uuid)
    await harness.driver.pause_vm(spec.uuid)
    assert await harness.driver.power_state(spec.uuid) is GuestPower.PAUSED
    with pytest.raises(IllegalTransition):
        await harness.driver.start_vm(spec.uuid)
    await harness.driver.unpause_vm(spec.uuid)
    await harness.driver.unpause_vm(spec.uuid)
    assert await harness.driver.power_state(spec.uuid) is GuestPower.RUNNING


async def test_a_paused_vm_is_stopped_hard(harness: Harness) -> None:
    harness.needs(Capability.PAUSE)
    spec = await harness.running()
    await harness.driver.pause_vm(spec.uuid)
    assert await harness.driver.stop_vm(spec.uuid, timeout=5) is StopOutcome.FORCED
    assert await harness.driver.power_state(spec.uuid) is GuestPower.STOPPED


async def test_suspend_saves_and_resume_restores(harness: Harness) -> None:
    harness.needs(Capability.SUSPEND)
    spec = await harness.running()
    await harness.driver.suspend_vm(spec.uuid)
    await harness.driver.suspend_vm(spec.uuid)
    assert await harness.driver.power_state(spec.uuid) is GuestPower.SUSPENDED
    refused_calls = [harness.driver.start_vm]
    if harness.driver.supports(Capability.PAUSE):
        refused_calls.append(harness.driver.pause_vm)
    for refused in refused_calls:
        with pytest.raises(IllegalTransition):
            await refused(spec.uuid)
    with pytest.raises(IllegalTransition):
        await harness.driver.stop_vm(spec.uuid, timeout=0)
    await harness.driver.resume_vm(spec.uuid)
    await harness.driver.resume_vm(spec.uuid)
    assert await harness.driver.power_state(spec.uuid) is GuestPower.RUNNING


async def test_a_suspended_vm_can_be_destroyed(harness: Harness) -> None:
    harness.needs(Capability.SUSPEND)
    spec = await harness.running()
    await harness.driver.suspend_vm(spec.uuid)
    await harness.driver.destroy_vm(spec.uuid)
    with pytest.raises(NotFound):
        await harness.driver.get_vm(spec.uuid)


async def test_operations_that_need_a_running_vm_refuse_a_stopped_one(harness: Harness) -> None:
    spec = await harness.define()
    needs_running = {
        Capability.PAUSE: (harness.driver.pause_vm, harness.driver.unpause_vm),
        Capability.SUSPEND: (harness.driver.suspend_vm, harness.driver.resume_vm),
        Capability.REBOOT: (harness.driver.reboot_vm,),
    }
    checked = 0
    for capability, calls in needs_running.items():
        if harness.driver.supports(capability):
            for call in calls:
                with pytest.raises(IllegalTransition):
                    await call(spec.uuid)
                checked += 1
    assert await harness.driver.power_state(spec.uuid) is GuestPower.STOPPED
    if checked == 0:
        pytest.skip("no optional power operations to check")


async def test_reboot_keeps_the_vm_running(harness: Harness) -> None:
    harness.needs(Capability.REBOOT)
    spec = await harness.running()
    await harness.driver.reboot_vm(spec.uuid)
    await harness.driver.reboot_vm(spec.uuid, hard=True)
    assert await harness.driver.power_state(spec.uuid) is GuestPower.RUNNING
