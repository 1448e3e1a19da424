"""A real VM under QEMU through libvirtd: its lifecycle, and the events libvirt pushes for it."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET

import pytest

from cloudcore.errors import BackendUnavailable, DriverError, IllegalTransition
from hypervisor_drivers.base import (
    DomainSpec,
    DriverSettings,
    EventKind,
    FileDisk,
    GuestPower,
    StopOutcome,
)
from hypervisor_drivers.libvirt import LibvirtDriver
from tests.contract.hypervisor.harness import next_event
from tests.integration.libvirt.conftest import Vms, virsh, virt_admin


async def _running_vm(driver: LibvirtDriver, vms: Vms) -> DomainSpec:
    spec = vms.spec()
    await driver.define_vm(spec)
    await driver.start_vm(spec.uuid)
    return spec


async def test_a_real_vm_runs_through_its_lifecycle_with_real_events(
    driver: LibvirtDriver, vms: Vms
) -> None:
    inventory = await driver.host_inventory()
    assert inventory.hypervisor_type == "QEMU"
    spec = vms.spec()
    async with driver.subscribe() as events:
        await driver.define_vm(spec)
        defined = await next_event(events, spec.uuid, kind=EventKind.DEFINED)
        assert defined.power is GuestPower.STOPPED

        await driver.start_vm(spec.uuid)
        started = await next_event(events, spec.uuid, kind=EventKind.STARTED)
        assert (started.power, started.detail) == (GuestPower.RUNNING, "booted")
        assert virsh("domstate", spec.name).stdout.strip() == "running"
        capacity = await driver.host_capacity()
        assert capacity.running_vms >= 1 and capacity.allocated_memory_kib >= 64 * 1024

        await driver.pause_vm(spec.uuid)
        await next_event(events, spec.uuid, kind=EventKind.PAUSED, power=GuestPower.PAUSED)
        assert virsh("domstate", spec.name).stdout.strip() == "paused"
        await driver.unpause_vm(spec.uuid)
        await next_event(events, spec.uuid, kind=EventKind.RESUMED, power=GuestPower.RUNNING)

        await driver.reboot_vm(spec.uuid, hard=True)
        assert await driver.power_state(spec.uuid) is GuestPower.RUNNING

        # No OS answers the ACPI request: the deadline passes and the VM is powered off.
        began = time.monotonic()
        assert await driver.stop_vm(spec.uuid, timeout=1.5) is StopOutcome.FORCED
        assert time.monotonic() - began >= 1.5
        stopped = await next_event(events, spec.uuid, kind=EventKind.STOPPED)
        assert (stopped.power, stopped.detail) == (GuestPower.STOPPED, "destroyed")

        await driver.destroy_vm(spec.uuid)
        await next_event(events, spec.uuid, kind=EventKind.UNDEFINED)
    assert spec.uuid not in {vm.uuid for vm in await driver.list_vms()}
    assert virsh("domstate", spec.name, check=False).returncode != 0


async def test_a_vm_powered_off_behind_the_drivers_back_is_seen_within_two_seconds(
    driver: LibvirtDriver, vms: Vms
) -> None:
    spec = await _running_vm(driver, vms)
    async with driver.subscribe() as events:
        seen = asyncio.create_task(next_event(events, spec.uuid, kind=EventKind.STOPPED))
        # virsh destroy returns once QEMU is gone (1-2 s here): the power-off happened then.
        outside = await asyncio.create_subprocess_exec(
            "virsh", "-q", "-c", "qemu:///system", "destroy", spec.name
        )
        assert await outside.wait() == 0
        powered_off = time.monotonic()
        stopped = await asyncio.wait_for(seen, timeout=2)
        assert time.monotonic() - powered_off < 2
    assert (stopped.power, stopped.detail) == (GuestPower.STOPPED, "destroyed")
    assert await driver.power_state(spec.uuid) is GuestPower.STOPPED


async def test_a_real_vm_is_suspended_to_disk_and_resumed(driver: LibvirtDriver, vms: Vms) -> None:
    spec = await _running_vm(driver, vms)
    async with driver.subscribe() as events:
        await driver.suspend_vm(spec.uuid)
        saved = await next_event(events, spec.uuid, kind=EventKind.SUSPENDED)
        assert (saved.power, saved.detail) == (GuestPower.SUSPENDED, "saved")
        assert await driver.power_state(spec.uuid) is GuestPower.SUSPENDED
        await driver.resume_vm(spec.uuid)
        restored = await next_event(events, spec.uuid, kind=EventKind.STARTED)
        assert (restored.power, restored.detail) == (GuestPower.RUNNING, "restored")
    assert await driver.power_state(spec.uuid) is GuestPower.RUNNING


def _disk_serials(name: str, *flags: str) -> dict[str, str]:
    root = ET.fromstring(virsh("dumpxml", name, *flags).stdout)
    return {
        disk.findtext("serial", ""): disk.find("target").get("dev", "")  # type: ignore[union-attr]
        for disk in root.iterfind("devices/disk")
    }


async def test_a_volume_is_attached_live_and_detached_from_the_definition(
    driver: LibvirtDriver, vms: Vms
) -> None:
    spec = await _running_vm(driver, vms)
    data = FileDisk(path=str(vms.image()), serial="data-1")
    assert await driver.attach_volume(spec.uuid, data) == "vdb"
    assert await driver.attach_volume(spec.uuid, data) == "vdb"
    assert _disk_serials(spec.name)["data-1"] == "vdb"
    assert _disk_serials(spec.name, "--inactive")["data-1"] == "vdb"
    # A guest without an OS never acknowledges a hot unplug, so detach from the definition.
    await driver.stop_vm(spec.uuid, timeout=0)
    await driver.detach_volume(spec.uuid, "data-1")
    await driver.detach_volume(spec.uuid, "data-1")
    assert "data-1" not in _disk_serials(spec.name, "--inactive")


async def test_a_stopped_vm_is_resized_and_snapshotted(driver: LibvirtDriver, vms: Vms) -> None:
    spec = vms.spec()
    await driver.define_vm(spec)
    vm = await driver.reconfigure_vm(spec.uuid, vcpus=2, memory_mib=128)
    assert (vm.vcpus, vm.memory_mib) == (2, 128)
    info = virsh("dominfo", spec.name).stdout
    assert "CPU(s):         2" in info and "131072 KiB" in info
    snapshot = await driver.create_snapshot(spec.uuid, "base")
    assert (snapshot.name, snapshot.power) == ("base", GuestPower.STOPPED)
    assert [s.name for s in await driver.list_snapshots(spec.uuid)] == ["base"]
    await driver.delete_snapshot(spec.uuid, "base")
    assert await driver.list_snapshots(spec.uuid) == []


async def test_a_running_vm_is_resized_live_within_its_maxima(
    driver: LibvirtDriver, vms: Vms
) -> None:
    spec = vms.spec(vcpus=1, max_vcpus=2, memory_mib=64, max_memory_mib=128)
    await driver.define_vm(spec)
    await driver.start_vm(spec.uuid)
    vm = await driver.reconfigure_vm(spec.uuid, vcpus=2, memory_mib=96)
    assert (vm.power, vm.vcpus, vm.memory_mib) == (GuestPower.RUNNING, 2, 96)
    assert "<vcpu placement='static'>2</vcpu>" in virsh("dumpxml", spec.name).stdout
    with pytest.raises(IllegalTransition, match="maxima"):
        await driver.reconfigure_vm(spec.uuid, memory_mib=256)


async def test_a_running_vm_is_snapshotted_with_its_memory_and_reverted(
    driver: LibvirtDriver, vms: Vms
) -> None:
    spec = await _running_vm(driver, vms)
    snapshot = await driver.create_snapshot(spec.uuid, "live")
    assert snapshot.power is GuestPower.RUNNING
    await driver.stop_vm(spec.uuid, timeout=0)
    await driver.revert_snapshot(spec.uuid, "live")
    assert await driver.power_state(spec.uuid) is GuestPower.RUNNING


async def test_a_missing_disk_image_fails_the_start_with_a_driver_error(
    driver: LibvirtDriver, vms: Vms
) -> None:
    spec = vms.spec(disks=[FileDisk(path="/var/lib/libvirt/images/cc-test-missing.qcow2")])
    await driver.define_vm(spec)
    with pytest.raises(DriverError, match=r"cc-test-missing\.qcow2"):
        await driver.start_vm(spec.uuid)
    assert await driver.power_state(spec.uuid) is GuestPower.STOPPED


def _daemon_clients() -> set[str]:
    listing = virt_admin("srv-clients-list", "libvirtd")
    return {line.split()[0] for line in listing.splitlines()[2:] if line.strip()}


async def test_a_connection_cut_by_the_daemon_is_a_retryable_backend_unavailable(
    libvirtd: str,
) -> None:
    before = _daemon_clients()
    driver = LibvirtDriver(DriverSettings(uri=libvirtd))
    await driver.connect()
    try:
        (ours,) = _daemon_clients() - before
        virt_admin("client-disconnect", "libvirtd", ours)
        with pytest.raises(BackendUnavailable) as lost:
            await driver.list_vms()
        assert lost.value.retryable
    finally:
        await driver.close()
