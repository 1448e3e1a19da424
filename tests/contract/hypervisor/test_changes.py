"""Reconfiguration, snapshots, volumes, migration, and refusals of undeclared capabilities."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from cloudcore.errors import Conflict, IllegalTransition, NotFound, UnsupportedOperation
from hypervisor_drivers.base import (
    Capability,
    FileDisk,
    GuestPower,
    HypervisorDriver,
    IscsiDisk,
    NicSpec,
)
from tests.contract.hypervisor.harness import Harness


async def test_a_stopped_vm_is_resized_beyond_its_maxima(harness: Harness) -> None:
    spec = await harness.define(vcpus=1, memory_mib=128)
    vm = await harness.driver.reconfigure_vm(spec.uuid, vcpus=4, memory_mib=1024)
    assert (vm.vcpus, vm.memory_mib) == (4, 1024)
    assert await harness.driver.get_vm(spec.uuid) == vm
    vm = await harness.driver.reconfigure_vm(spec.uuid, memory_mib=256)
    assert (vm.vcpus, vm.memory_mib) == (4, 256)


async def test_sizes_below_one_are_refused(harness: Harness) -> None:
    spec = await harness.define()
    with pytest.raises(ValueError, match="at least"):
        await harness.driver.reconfigure_vm(spec.uuid, vcpus=0)


async def test_a_running_vm_is_resized_live_within_its_maxima(harness: Harness) -> None:
    harness.needs(Capability.LIVE_RECONFIGURE)
    spec = await harness.running(vcpus=1, max_vcpus=4, memory_mib=128, max_memory_mib=512)
    vm = await harness.driver.reconfigure_vm(spec.uuid, vcpus=2, memory_mib=256)
    assert (vm.power, vm.vcpus, vm.memory_mib) == (GuestPower.RUNNING, 2, 256)
    with pytest.raises(IllegalTransition, match="maxima"):
        await harness.driver.reconfigure_vm(spec.uuid, vcpus=8)
    await harness.driver.stop_vm(spec.uuid, timeout=0)
    assert (await harness.driver.get_vm(spec.uuid)).vcpus == 2  # the definition changed too


async def test_snapshots_are_created_listed_reverted_and_deleted(harness: Harness) -> None:
    harness.needs(Capability.SNAPSHOT)
    spec = await harness.running()
    first = await harness.driver.create_snapshot(spec.uuid, "before")
    assert (first.name, first.power) == ("before", GuestPower.RUNNING)
    with pytest.raises(Conflict):
        await harness.driver.create_snapshot(spec.uuid, "before")
    await harness.driver.stop_vm(spec.uuid, timeout=0)
    await harness.driver.create_snapshot(spec.uuid, "after")
    names = [s.name for s in await harness.driver.list_snapshots(spec.uuid)]
    assert names == ["before", "after"]
    await harness.driver.revert_snapshot(spec.uuid, "before")
    assert await harness.driver.power_state(spec.uuid) is GuestPower.RUNNING
    with pytest.raises(NotFound):
        await harness.driver.revert_snapshot(spec.uuid, "never")
    await harness.driver.delete_snapshot(spec.uuid, "after")
    await harness.driver.delete_snapshot(spec.uuid, "after")
    assert [s.name for s in await harness.driver.list_snapshots(spec.uuid)] == ["before"]


async def test_a_vm_with_an_iscsi_disk_is_defined(harness: Harness) -> None:
    lun = IscsiDisk(host="192.0.2.10", iqn="iqn.2026-01.org.cloudcore:vol1", lun=1, serial="vol1")
    if not harness.driver.supports(Capability.ISCSI_DISKS):
        with pytest.raises(UnsupportedOperation):
            await harness.define(disks=[lun])
        return
    spec = await harness.define(disks=[lun])
    assert (await harness.driver.get_vm(spec.uuid)).power is GuestPower.STOPPED


async def test_volumes_attach_and_detach_idempotently(harness: Harness) -> None:
    harness.needs(Capability.ATTACH_VOLUME)
    spec = await harness.define()
    volume = FileDisk(path=harness.disk_path("data"), serial="data-1")
    device = await harness.driver.attach_volume(spec.uuid, volume)
    assert device
    assert await harness.driver.attach_volume(spec.uuid, volume) == device
    await harness.driver.detach_volume(spec.uuid, "data-1")
    await harness.driver.detach_volume(spec.uuid, "data-1")
    assert await harness.driver.attach_volume(spec.uuid, volume) == device  # the slot is free


def _calls(driver: HypervisorDriver, vm: str) -> dict[Capability, Callable[[], Awaitable[object]]]:
    disk = FileDisk(path="/images/x.qcow2", serial="x")
    return {
        Capability.REBOOT: lambda: driver.reboot_vm(vm),
        Capability.PAUSE: lambda: driver.pause_vm(vm),
        Capability.SUSPEND: lambda: driver.suspend_vm(vm),
        Capability.RECONFIGURE: lambda: driver.reconfigure_vm(vm, vcpus=2),
        Capability.SNAPSHOT: lambda: driver.create_snapshot(vm, "s"),
        Capability.ATTACH_VOLUME: lambda: driver.attach_volume(vm, disk),
        Capability.MIGRATE: lambda: driver.migrate_vm(vm, driver.settings),
        Capability.HOTPLUG_NIC: lambda: driver.attach_nic(vm, NicSpec(mac="52:54:00:00:00:09")),
        Capability.HOST_POWER: lambda: driver.set_host_power(True),
    }


async def test_every_undeclared_capability_is_refused_as_unsupported(harness: Harness) -> None:
    spec = await harness.running()
    calls = _calls(harness.driver, spec.uuid)
    missing = [c for c in calls if not harness.driver.supports(c)]
    if not missing:
        pytest.skip("the driver declares every capability")
    for capability in missing:
        with pytest.raises(UnsupportedOperation, match=capability.value):
            await calls[capability]()
    assert await harness.driver.power_state(spec.uuid) is GuestPower.RUNNING
