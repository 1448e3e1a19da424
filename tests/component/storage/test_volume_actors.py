"""The storage pool and Volume actors: every operation a journaled task that ends, one at a
time, refusals naming the state and what is allowed, quota and pool room moving with the
record, a task cut short run again when its pool resumes it, and the operator's recover verbs."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from actors.messages import RecoverVerb
from actors.storage import StorageService
from actors.volume import task_data
from actors.volume_messages import (
    AttachParams,
    CreateVolumeParams,
    DeleteSnapshotParams,
    DeleteVolumeParams,
    DetachParams,
    ExtendParams,
    ListBackend,
    SnapshotVolumeParams,
)
from actors.watchdog import Resume
from cloudcore.errors import (
    Conflict,
    IllegalTransition,
    InsufficientCapacity,
    InvalidRecord,
    QuotaExceeded,
)
from cloudcore.store.records import (
    VM,
    Task,
    TaskState,
    VMSpec,
    Volume,
    VolumeSnapshot,
    VolumeState,
    new_id,
)
from tests.cloud import Cloud

POOL = "dc1-pool"


def storage(cloud: Cloud) -> StorageService:
    assert cloud.orchestrator.storage is not None
    return cloud.orchestrator.storage


async def create(cloud: Cloud, size_gib: int = 10, tenant: str = "demo") -> Volume:
    svc = storage(cloud)
    task = await svc.create_volume(
        tenant_id=tenant, datacenter_id="dc1", name="v", size_gib=size_gib
    )
    done = await svc.wait(task.id, 10)
    assert done.state is TaskState.SUCCEEDED, done.error
    return await cloud.store.get(Volume, task.subject.removeprefix("volume/"))


async def run(cloud: Cloud, volume_id: str, params: object) -> Task:
    svc = storage(cloud)
    task = await svc.operate(volume_id, params)  # type: ignore[arg-type]
    return await svc.wait(task.id, 10)


async def running_vm(cloud: Cloud) -> VM:
    task = await cloud.orchestrator.deploy(
        tenant_id="demo", datacenter_id="dc1", name="web", spec=VMSpec(cpus=1, memory_mib=64)
    )
    assert (await cloud.wait(task)).state is TaskState.SUCCEEDED
    return await cloud.store.get(VM, task.subject.removeprefix("vm/"))


async def committed(cloud: Cloud) -> int:
    (status,) = await storage(cloud).pool_status("dc1")
    return status.committed_mib


async def used(cloud: Cloud) -> dict[str, int]:
    return {q.resource: q.used for q in await cloud.store.get_quotas("demo")}


async def test_create_places_on_the_pool_and_takes_quota(cloud: Cloud) -> None:
    await cloud.store.set_quota("demo", "volume_gib", 100)
    volume = await create(cloud, 10)
    assert (volume.state, volume.pool_id, volume.task_id) == (VolumeState.AVAILABLE, POOL, None)
    assert await used(cloud) == {"volume_gib": 10}
    assert await committed(cloud) == 10 * 1024
    (task,) = (await cloud.store.list(Task, where={"subject": f"volume/{volume.id}"})).items
    assert [s.name for s in await cloud.store.list_steps(task.id)] == ["create"]


async def test_a_volume_over_quota_or_pool_is_refused_and_nothing_stays(cloud: Cloud) -> None:
    await cloud.store.set_quota("demo", "volume_gib", 5)
    with pytest.raises(QuotaExceeded, match="volume_gib"):
        await storage(cloud).create_volume(
            tenant_id="demo", datacenter_id="dc1", name="v", size_gib=6
        )
    with pytest.raises(InsufficientCapacity, match=POOL):
        await storage(cloud).create_volume(
            tenant_id="demo", datacenter_id="dc1", name="v", size_gib=5000
        )
    with pytest.raises(InvalidRecord, match="tier"):
        await storage(cloud).create_volume(
            tenant_id="demo", datacenter_id="dc1", name="v", size_gib=1, tier="gold"
        )
    assert (await cloud.store.list(Volume)).items == []
    assert await committed(cloud) == 0
    assert await used(cloud) == {"volume_gib": 0}


async def test_attach_exports_to_the_vms_host_and_detach_undoes_it(cloud: Cloud) -> None:
    vm = await running_vm(cloud)
    volume = await create(cloud)

    done = await run(cloud, volume.id, AttachParams(vm_id=vm.id))

    assert done.state is TaskState.SUCCEEDED, done.error
    volume = await cloud.store.get(Volume, volume.id)
    assert (volume.state, volume.vm_id, volume.device) == (
        VolumeState.ATTACHED,
        vm.id,
        "simulated:sda",
    )
    assert [s.name for s in await cloud.store.list_steps(done.id)] == ["export", "attach"]
    pool = storage(cloud).pool_ref(POOL)
    backend, _ = await pool.ask(ListBackend())
    assert backend[volume.id] == f"iqn.2026-12.org.cloudcore.host:{vm.host_id}"

    # Grown while attached: the demo hosts' test driver cannot tell a running guest, said so.
    assert (await run(cloud, volume.id, ExtendParams(size_gib=12))).state is TaskState.SUCCEEDED
    grown = await cloud.store.get(Volume, volume.id)
    assert (grown.state, grown.size_gib) == (VolumeState.ATTACHED, 12)
    assert "cannot tell the running guest" in (grown.fault or "")

    done = await run(cloud, volume.id, DetachParams())
    assert done.state is TaskState.SUCCEEDED, done.error
    volume = await cloud.store.get(Volume, volume.id)
    assert (volume.state, volume.vm_id, volume.device, volume.target) == (
        VolumeState.AVAILABLE,
        None,
        None,
        None,
    )
    backend, _ = await pool.ask(ListBackend())
    assert backend[volume.id] is None
    assert await storage(cloud).reconcile() == []


async def test_illegal_operations_name_the_state_and_what_is_allowed(cloud: Cloud) -> None:
    volume = await create(cloud)
    with pytest.raises(
        IllegalTransition,
        match=r"cannot detach volume .*: it is AVAILABLE; "
        "allowed now: attach, extend, snapshot, delete_snapshot, delete",
    ):
        await storage(cloud).operate(volume.id, DetachParams())
    with pytest.raises(InvalidRecord, match="vm_id"):
        await storage(cloud).operate(volume.id, AttachParams(vm_id="vm-none"))
    with pytest.raises(InvalidRecord, match="size_gib"):
        await storage(cloud).operate(volume.id, ExtendParams(size_gib=5))


async def test_one_operation_at_a_time(cloud: Cloud) -> None:
    volume = await create(cloud)
    svc = storage(cloud)
    first = await svc.operate(volume.id, ExtendParams(size_gib=20))
    with pytest.raises(IllegalTransition, match="allowed now"):
        await svc.operate(volume.id, ExtendParams(size_gib=30))
    assert (await svc.wait(first.id, 10)).state is TaskState.SUCCEEDED


async def test_extend_takes_quota_and_room_and_a_refused_one_takes_none(cloud: Cloud) -> None:
    await cloud.store.set_quota("demo", "volume_gib", 25)
    volume = await create(cloud, 10)
    done = await run(cloud, volume.id, ExtendParams(size_gib=20))
    assert done.state is TaskState.SUCCEEDED
    volume = await cloud.store.get(Volume, volume.id)
    assert (volume.state, volume.size_gib) == (VolumeState.AVAILABLE, 20)
    assert await used(cloud) == {"volume_gib": 20}
    tasks = (await cloud.store.list(Task, where={"subject": f"volume/{volume.id}"})).items
    with pytest.raises(QuotaExceeded):
        await storage(cloud).operate(volume.id, ExtendParams(size_gib=30))
    assert (await cloud.store.get(Volume, volume.id)).state is VolumeState.AVAILABLE
    # The task is written with the quota it takes, or not at all: a refusal leaves none.
    assert (await cloud.store.list(Task, where={"subject": f"volume/{volume.id}"})).items == tasks
    assert await committed(cloud) == 20 * 1024  # the refused growth was given back


async def test_snapshots_are_taken_and_deleted_and_hold_a_delete(cloud: Cloud) -> None:
    volume = await create(cloud, 4)
    snap_id = new_id("snap-")
    done = await run(cloud, volume.id, SnapshotVolumeParams(snapshot_id=snap_id, name="s1"))
    assert done.state is TaskState.SUCCEEDED, done.error
    snap = await cloud.store.get(VolumeSnapshot, snap_id)
    assert (snap.state, snap.size_gib) == ("AVAILABLE", 4)
    assert await committed(cloud) == 8 * 1024
    with pytest.raises(Conflict, match="snapshots"):
        await storage(cloud).operate(volume.id, DeleteVolumeParams())

    done = await run(cloud, volume.id, DeleteSnapshotParams(snapshot_id=snap_id))
    assert done.state is TaskState.SUCCEEDED, done.error
    assert (await cloud.store.list(VolumeSnapshot)).items == []
    assert await committed(cloud) == 4 * 1024


async def test_delete_gives_everything_back_and_stops_the_actor(cloud: Cloud) -> None:
    await cloud.store.set_quota("demo", "volumes", 3)
    volume = await create(cloud, 4)
    done = await run(cloud, volume.id, DeleteVolumeParams())
    assert done.state is TaskState.SUCCEEDED, done.error
    assert (await cloud.store.get(Volume, volume.id)).state is VolumeState.DELETED
    assert await used(cloud) == {"volumes": 0}
    assert await committed(cloud) == 0
    with pytest.raises(LookupError):  # deleted: a new request finds no volume
        await storage(cloud).operate(volume.id, ExtendParams(size_gib=8))


async def test_a_create_cut_short_by_a_crash_runs_again_when_its_pool_resumes_it(
    cloud: Cloud,
) -> None:
    volume = Volume(id=new_id("vol-"), tenant_id="demo", datacenter_id="dc1", name="v",
                    size_gib=2, pool_id=POOL)  # fmt: skip
    task = Task(id=new_id("task-"), tenant_id="demo", kind="volume.create",
                subject=f"volume/{volume.id}", state=TaskState.RUNNING,
                data=task_data(CreateVolumeParams(), volume))  # fmt: skip
    volume = msgspec.structs.replace(volume, task_id=task.id)
    await cloud.store.create_volume(volume, task, {})  # what a crash left: no actor ran it

    ref = await storage(cloud).volume_ref(volume)  # activated: a first start resumes nothing
    assert task.id not in cloud.orchestrator.services.runners
    ref.tell(Resume(task_id=task.id))  # as its pool does after a restart, or its watchdog

    done = await storage(cloud).wait(task.id, 10)
    assert done.state is TaskState.SUCCEEDED
    assert (await cloud.store.get(Volume, volume.id)).state is VolumeState.AVAILABLE


async def test_recover_retry_runs_a_failed_create_again(cloud: Cloud) -> None:
    volume = Volume(id=new_id("vol-"), tenant_id="demo", datacenter_id="dc1", name="v",
                    size_gib=2, pool_id=POOL, state=VolumeState.ERROR, fault="boom")  # fmt: skip
    task = Task(id=new_id("task-"), tenant_id="demo", kind="volume.create",
                subject=f"volume/{volume.id}", state=TaskState.FAILED,
                data=task_data(CreateVolumeParams(), volume))  # fmt: skip
    await cloud.store.create_volume(volume, task, {})
    svc = storage(cloud)
    with pytest.raises(IllegalTransition, match="recover applies to a volume in ERROR"):
        await svc.recover((await create(cloud)).id, RecoverVerb.RETRY)

    retried = await svc.recover(volume.id, RecoverVerb.RETRY)

    assert (await svc.wait(retried.id, 10)).state is TaskState.SUCCEEDED
    assert (await cloud.store.get(Volume, volume.id)).state is VolumeState.AVAILABLE


async def test_many_concurrent_creates_never_overcommit_the_pool(cloud: Cloud) -> None:
    # The demo pool holds 1024 GiB: 30 volumes of 40 GiB cannot all fit.
    svc = storage(cloud)
    results = await asyncio.gather(
        *(svc.create_volume(tenant_id="demo", datacenter_id="dc1", name=f"v{n}", size_gib=40)
          for n in range(30)),
        return_exceptions=True,
    )  # fmt: skip
    placed = [r for r in results if isinstance(r, Task)]
    assert len(placed) == 25
    assert all(isinstance(r, InsufficientCapacity) for r in results if not isinstance(r, Task))
    for task in placed:
        assert (await svc.wait(task.id, 10)).state is TaskState.SUCCEEDED
    assert await committed(cloud) == 25 * 40 * 1024


async def test_the_reconciler_reports_orphans_and_missing_volumes(cloud: Cloud) -> None:
    from pathlib import Path

    from storage_drivers.base import StorageSettings, VolumeSpec
    from storage_drivers.simulated import SimulatedStorageDriver

    kept, lost = await create(cloud), await create(cloud)
    # Behind the store's back, on the same backend: a LUN nobody knows, one deleted, one
    # exported to a stranger.
    backend = SimulatedStorageDriver(
        StorageSettings(pool=str(Path(cloud.settings.node.data_dir) / "storage" / POOL))
    )
    await backend.connect()
    orphan = new_id("vol-")
    await backend.create_volume(VolumeSpec(volume_id=orphan, size_mib=16))
    await backend.delete_volume(lost.id)
    await backend.export_volume(kept.id, "iqn.2026-12.org.example:stranger")

    drift = await storage(cloud).reconcile()

    assert {(d.kind, d.id) for d in drift} == {
        ("orphan_volume", orphan),
        ("missing_volume", lost.id),
        ("orphan_export", kept.id),
    }
    assert (await cloud.store.get(Volume, kept.id)).state is VolumeState.AVAILABLE  # reported only
