"""HA of a VM that boots from a volume (simulated hosts and the demo's simulated pool): when its
host dies and is fenced, the VM's restart is a deploy on another host, whose boot step finds
the volume still attached to the VM (exported to the dead host's initiator); it detaches it and
attaches it afresh, so the volume is exported to the new host and attached there."""

from __future__ import annotations

from pathlib import Path

from actors.volume_messages import ListBackend
from cloudcore.store.records import VM, BootVolume, TaskState, VMSpec, VMState, Volume, VolumeState
from tests.cloud import Cloud
from tests.component.orchestrator.test_ha import _check, _kill, _where, cloud2  # noqa: F401
from tests.waiting import eventually


async def test_an_ha_vm_booted_from_a_volume_restarts_elsewhere_with_its_volume(
    cloud2: Cloud,  # noqa: F811
    tmp_path: Path,
) -> None:
    cloud, storage = cloud2, cloud2.orchestrator.storage
    assert storage is not None
    created = await storage.wait(
        (
            await storage.create_volume(
                tenant_id="demo", datacenter_id="dc1", name="root", size_gib=1
            )
        ).id
    )
    volume_id = created.subject.removeprefix("volume/")
    spec = VMSpec(cpus=1, memory_mib=512, ha=True, boot_volume=BootVolume(volume_id=volume_id))
    task = await cloud.wait(
        await cloud.orchestrator.deploy(tenant_id="demo", datacenter_id="dc1", name="b", spec=spec)
    )
    assert task.state is TaskState.SUCCEEDED, task.error
    vm = await cloud.store.get(VM, task.subject.removeprefix("vm/"))
    first = vm.host_id
    assert first is not None
    await _kill(cloud, tmp_path, first)

    async def recovered() -> bool:
        await _check(cloud)
        now = await cloud.store.get(VM, vm.id)
        return now.state is VMState.RUNNING and now.host_id != first

    await eventually(recovered, timeout=30, interval=0.1)
    moved = await cloud.store.get(VM, vm.id)
    assert await _where(cloud, vm.id) == [moved.host_id]
    volume = await cloud.store.get(Volume, volume_id)
    assert (volume.state, volume.vm_id) == (VolumeState.ATTACHED, vm.id)
    pool = cloud.orchestrator.system.lookup(f"/user/storage/{volume.pool_id}")
    exports, _ = await pool.ask(ListBackend())
    assert dict(exports)[volume_id] == f"iqn.2026-12.org.cloudcore.host:{moved.host_id}"
