"""A node stopped with 20 attaches in flight (their background work cancelled mid-step, the
tasks left RUNNING and the volumes ATTACHING in the store), then started again on the same store:
every task ends, each volume is ATTACHED if its task succeeded and AVAILABLE (unexported) if not,
and the store and the storage backend agree (the reconciler finds no dangling export).

The storage backend (the simulated driver's records) lives in this process and outlives the
node, as a real tgtd does. The demo hosts do not: libvirt's test driver starts empty again, so
an attach resumed after the restart finds no domain, fails, and unexports (compensation)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from actors.registration import bootstrap_demo
from actors.volume_messages import AttachParams
from cloudcore.store import Store
from cloudcore.store.records import VM, Task, TaskState, VMSpec, Volume, VolumeState
from hypervisor_drivers.base import HypervisorDriver
from tests.cloud import cloud_settings, start_cloud


async def test_attaches_cut_short_by_a_stop_all_end_and_agree_with_the_backend(
    sqlite_store: Store, tmp_path: Path
) -> None:
    settings = cloud_settings(tmp_path)
    await bootstrap_demo(sqlite_store, settings)
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(sqlite_store, settings, drivers)
    storage = orchestrator.storage
    assert storage is not None
    vms = []
    for n in range(2):
        deploy = await orchestrator.deploy(
            tenant_id="demo", datacenter_id="dc1", name=f"g{n}", spec=VMSpec(cpus=1, memory_mib=64)
        )
        assert (await orchestrator.wait(deploy.id, 20)).state is TaskState.SUCCEEDED
        vms.append(await sqlite_store.get(VM, deploy.subject.removeprefix("vm/")))
    volumes = []
    for _ in range(20):
        task = await storage.create_volume(
            tenant_id="demo", datacenter_id="dc1", name="v", size_gib=1
        )
        assert (await storage.wait(task.id, 20)).state is TaskState.SUCCEEDED
        volumes.append(task.subject.removeprefix("volume/"))

    attaches = await asyncio.gather(
        *(storage.operate(vol, AttachParams(vm_id=vms[n % 2].id)) for n, vol in enumerate(volumes))
    )
    await system.shutdown()  # the work in flight is cancelled where it stands
    cut_short = [
        t for t in attaches if (await sqlite_store.get(Task, t.id)).state is TaskState.RUNNING
    ]

    system, orchestrator = await start_cloud(sqlite_store, settings, drivers)
    try:
        storage = orchestrator.storage
        assert storage is not None
        for task, vol in zip(attaches, volumes, strict=True):
            done = await storage.wait(task.id, 20)
            assert done.state in (TaskState.SUCCEEDED, TaskState.FAILED), done
            volume = await sqlite_store.get(Volume, vol)
            attached = done.state is TaskState.SUCCEEDED
            expected = VolumeState.ATTACHED if attached else VolumeState.AVAILABLE
            assert (volume.state, volume.task_id) == (expected, None), (volume, done.error)
            assert (volume.vm_id is not None) is attached
        assert await storage.reconcile() == []  # no export the store does not know, none missing
    finally:
        await system.shutdown()
    print(f"{len(cut_short)} of 20 attaches were cut short and resumed")
