"""A VM's delete cut short by a node stop while it releases its volumes, then asked again after
the node starts on the same store: no volume is left ATTACHED to a DELETED VM, the volume kept
is AVAILABLE and unexported, the one attached with ``delete_on_termination`` is DELETED (even
when the cut-short delete had already detached it), and quotas equal what exists.

The cut is placed deterministically: the node stops while the VM's delete waits for the detach
task of one of its volumes (that task's end is withheld from the delete's waiter). The storage
backend (the simulated driver's records) outlives the node, as a real tgtd does; the demo hosts
do not (libvirt's test driver starts empty), so the VM comes back in ERROR."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from actors.lifecycle import Operation
from actors.registration import bootstrap_demo
from actors.volume_messages import AttachParams
from cloudcore.store import Store
from cloudcore.store.records import VM, Task, TaskState, VMSpec, VMState, Volume, VolumeState
from cloudcore.store.usage import vm_usage, volume_usage
from hypervisor_drivers.base import HypervisorDriver
from tests.cloud import cloud_settings, start_cloud

RESOURCES = ("vms", "cpus", "memory_mib", "volumes", "volume_gib")


async def usage_matches(store: Store) -> None:
    total = dict.fromkeys(RESOURCES, 0)
    vms = (await store.list(VM, where={"tenant_id": "demo"}, limit=1000)).items
    vols = (await store.list(Volume, where={"tenant_id": "demo"}, limit=1000)).items
    usages = [vm_usage(v.spec) for v in vms if v.state is not VMState.DELETED]
    usages += [volume_usage(v.size_gib) for v in vols if v.state is not VolumeState.DELETED]
    for usage in usages:
        for resource, n in usage.items():
            total[resource] += n
    used = {q.resource: q.used for q in await store.get_quotas("demo")}
    assert used == total


async def none_attached_to_deleted(store: Store) -> None:
    for volume in (await store.list(Volume, limit=1000)).items:
        if volume.vm_id is not None:
            vm = await store.get(VM, volume.vm_id)
            assert vm.state is not VMState.DELETED, (volume, vm)


@pytest.mark.parametrize("cut_at", ["kept", "doomed"])
async def test_a_vm_delete_cut_short_and_asked_again_releases_its_volumes(
    sqlite_store: Store, tmp_path: Path, cut_at: str
) -> None:
    store = sqlite_store
    settings = cloud_settings(tmp_path)
    await bootstrap_demo(store, settings)
    for resource in RESOURCES:
        await store.set_quota("demo", resource, 10_000)
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(store, settings, drivers)
    storage = orchestrator.storage
    assert storage is not None
    deploy = await orchestrator.deploy(
        tenant_id="demo", datacenter_id="dc1", name="g", spec=VMSpec(cpus=1, memory_mib=64)
    )
    assert (await orchestrator.wait(deploy.id, 20)).state is TaskState.SUCCEEDED
    vm_id = deploy.subject.removeprefix("vm/")
    ids = []
    for size in (2, 3):
        task = await storage.create_volume(
            tenant_id="demo", datacenter_id="dc1", name="v", size_gib=size
        )
        assert (await storage.wait(task.id, 20)).state is TaskState.SUCCEEDED
        ids.append(task.subject.removeprefix("volume/"))
    kept, doomed = ids
    for volume_id, flag in ((kept, False), (doomed, True)):
        task = await storage.operate(
            volume_id, AttachParams(vm_id=vm_id, delete_on_termination=flag)
        )
        assert (await storage.wait(task.id, 20)).state is TaskState.SUCCEEDED

    target = kept if cut_at == "kept" else doomed
    waiters = orchestrator.services.waiters
    resolve = waiters.resolve
    reached = asyncio.Event()

    def withhold(task: Task) -> None:  # the delete waits on this detach for ever: cut it there
        if task.kind == "volume.detach" and task.subject == f"volume/{target}":
            reached.set()
            return
        resolve(task)

    waiters.resolve = withhold  # type: ignore[method-assign]
    first = await orchestrator.operate(vm_id, Operation.DELETE)
    await asyncio.wait_for(reached.wait(), 20)
    await system.shutdown()
    assert (await store.get(Volume, target)).vm_id is None  # detached before the cut
    await none_attached_to_deleted(store)

    system, orchestrator = await start_cloud(store, settings, drivers)
    try:
        storage = orchestrator.storage
        assert storage is not None
        assert (await orchestrator.wait(first.id, 20)).state is TaskState.FAILED
        vm = await store.get(VM, vm_id)
        assert vm.state is not VMState.DELETED
        await none_attached_to_deleted(store)
        again = await orchestrator.operate(vm_id, Operation.DELETE)
        done = await orchestrator.wait(again.id, 20)
        assert done.state is TaskState.SUCCEEDED, done.error
        assert (await store.get(VM, vm_id)).state is VMState.DELETED
        k, d = await store.get(Volume, kept), await store.get(Volume, doomed)
        assert (k.state, k.vm_id, k.target, k.task_id) == (VolumeState.AVAILABLE, None, None, None)
        assert d.state is VolumeState.DELETED
        await none_attached_to_deleted(store)
        await usage_matches(store)
        assert await storage.reconcile() == []  # no dangling export
    finally:
        await system.shutdown()
