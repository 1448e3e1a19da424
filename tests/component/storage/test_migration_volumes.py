"""An attached volume follows its VM when it migrates (simulated storage and libvirt's test
hosts): its export admits the target host's initiator before the move, and afterwards only the
initiator of the host the VM is on; the attachment goes with the VM."""

from __future__ import annotations

from structlog.testing import capture_logs

from actors.guest import domain_spec
from actors.lifecycle import Operation
from actors.operations import MigrateParams
from actors.volume_messages import AttachParams, DetachParams, ListBackend
from cloudcore.store.records import VM, TaskState, Volume, VolumeState
from tests.cloud import Cloud
from tests.component.storage.test_volume_actors import POOL, create, run, running_vm, storage

_IQN = "iqn.2026-12.org.cloudcore.host"


async def _attached(cloud: Cloud) -> tuple[VM, Volume]:
    vm = await running_vm(cloud)
    volume = await create(cloud)
    assert (await run(cloud, volume.id, AttachParams(vm_id=vm.id))).state is TaskState.SUCCEEDED
    return vm, volume


async def _exported_to(cloud: Cloud, volume_id: str) -> str | None:
    backend, _ = await storage(cloud).pool_ref(POOL).ask(ListBackend())
    return backend[volume_id]  # type: ignore[no-any-return]


def _other(vm: VM) -> str:
    return "dc1-h2" if vm.host_id == "dc1-h1" else "dc1-h1"


async def test_an_attached_volume_follows_its_vm(cloud: Cloud) -> None:
    vm, volume = await _attached(cloud)
    source, target = vm.host_id, _other(vm)

    with capture_logs() as logs:
        task = await cloud.wait(
            await cloud.orchestrator.operate(
                vm.id, Operation.MIGRATE, MigrateParams(host_id=target)
            )
        )
    assert task.state is TaskState.SUCCEEDED, task.error

    # Admitted beside the source's before the move, then the source's dropped.
    events = [(e["event"], e.get("initiator")) for e in logs if "volume." in e["event"]]
    assert events == [
        ("volume.exported_also", f"{_IQN}:{target}"),
        ("volume.unexported_from", f"{_IQN}:{source}"),
    ]
    assert await _exported_to(cloud, volume.id) == f"{_IQN}:{target}"
    after = await cloud.store.get(Volume, volume.id)
    assert (after.state, after.vm_id) == (VolumeState.ATTACHED, vm.id)

    # It is attached on the new host: a detach there undoes the export.
    assert (await run(cloud, volume.id, DetachParams())).state is TaskState.SUCCEEDED
    assert await _exported_to(cloud, volume.id) is None


async def test_a_failed_migration_leaves_the_export_to_the_source_only(cloud: Cloud) -> None:
    vm, volume = await _attached(cloud)
    source, target = vm.host_id, _other(vm)
    await cloud.drivers[target].define_vm(domain_spec(vm))  # the hypervisor will refuse

    with capture_logs() as logs:
        task = await cloud.wait(
            await cloud.orchestrator.operate(
                vm.id, Operation.MIGRATE, MigrateParams(host_id=target)
            )
        )
    assert task.state is TaskState.FAILED and "already has" in (task.error or "")

    events = [(e["event"], e.get("initiator")) for e in logs if "volume." in e["event"]]
    assert events == [
        ("volume.exported_also", f"{_IQN}:{target}"),
        ("volume.unexported_from", f"{_IQN}:{target}"),
    ]
    assert await _exported_to(cloud, volume.id) == f"{_IQN}:{source}"
    assert (await cloud.store.get(VM, vm.id)).host_id == source
