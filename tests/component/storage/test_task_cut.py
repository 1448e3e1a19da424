"""The cut between a volume task and its volume's change, isolated: a node stopped inside the
write that begins an operation leaves neither the task nor the change (one transaction), and a
task left RUNNING beside a volume at rest (what two transactions used to leave) is ended by the
pool's watchdog by itself."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from actors.registration import bootstrap_demo
from actors.volume_messages import AttachParams, WatchVolumeTasks
from cloudcore.store import Store
from cloudcore.store.records import VM, Task, TaskState, VMSpec, Volume, VolumeState, new_id
from hypervisor_drivers.base import HypervisorDriver
from tests.cloud import cloud_settings, start_cloud
from tests.waiting import eventually


async def _vm_and_volume(orchestrator: Any, store: Store) -> tuple[VM, Volume]:
    deploy = await orchestrator.deploy(
        tenant_id="demo", datacenter_id="dc1", name="g", spec=VMSpec(cpus=1, memory_mib=64)
    )
    assert (await orchestrator.wait(deploy.id, 20)).state is TaskState.SUCCEEDED
    storage = orchestrator.storage
    create = await storage.create_volume(
        tenant_id="demo", datacenter_id="dc1", name="v", size_gib=1
    )
    assert (await storage.wait(create.id, 20)).state is TaskState.SUCCEEDED
    vm = await store.get(VM, deploy.subject.removeprefix("vm/"))
    return vm, await store.get(Volume, create.subject.removeprefix("volume/"))


async def _volume_tasks(store: Store, volume_id: str) -> list[Task]:
    return (await store.list(Task, where={"subject": f"volume/{volume_id}"})).items


async def test_a_stop_inside_the_write_that_begins_an_attach_leaves_neither_task_nor_change(
    sqlite_store: Store, tmp_path: Path
) -> None:
    settings = cloud_settings(tmp_path)
    await bootstrap_demo(sqlite_store, settings)
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(sqlite_store, settings, drivers)
    vm, volume = await _vm_and_volume(orchestrator, sqlite_store)
    before = await _volume_tasks(sqlite_store, volume.id)

    # The node stops right after the attach's task row is written, inside its transaction.
    writer: Any = sqlite_store._writer_conn  # type: ignore[attr-defined]
    execute, reached = writer.execute, asyncio.Event()

    async def stop_after_the_task_insert(sql: str, *args: Any) -> Any:
        result = await execute(sql, *args)
        if sql.startswith("INSERT INTO tasks") and "volume.attach" in args:
            reached.set()
            await asyncio.Event().wait()  # until the stop cancels it
        return result

    writer.execute = stop_after_the_task_insert
    storage = orchestrator.storage
    assert storage is not None
    attach = asyncio.create_task(storage.operate(volume.id, AttachParams(vm_id=vm.id)))
    await asyncio.wait_for(reached.wait(), 10)
    await system.shutdown(timeout=0.2)
    with contextlib.suppress(BaseException):
        await attach
    writer.execute = execute

    assert await _volume_tasks(sqlite_store, volume.id) == before  # no task RUNNING left
    after = await sqlite_store.get(Volume, volume.id)
    assert (after.state, after.task_id, after.version) == (
        VolumeState.AVAILABLE,
        None,
        volume.version,
    )

    system, orchestrator = await start_cloud(sqlite_store, settings, drivers)
    try:  # nothing for the watchdog; the volume takes an operation asked again, which ends
        pool = system.lookup(f"/user/storage/{after.pool_id}")
        assert await pool.ask(WatchVolumeTasks()) == []
        storage = orchestrator.storage
        assert storage is not None
        task = await storage.operate(volume.id, AttachParams(vm_id=vm.id))
        # The test driver's hosts start empty again: the VM's domain is gone, so it fails.
        assert (await storage.wait(task.id, 20)).state is TaskState.FAILED
        assert (await sqlite_store.get(Volume, volume.id)).state is VolumeState.AVAILABLE
    finally:
        await system.shutdown()


async def test_the_watchdog_ends_volume_tasks_left_running_beside_a_volume_at_rest(
    sqlite_store: Store, tmp_path: Path
) -> None:
    settings = cloud_settings(tmp_path, watchdog_interval=0.2)
    await bootstrap_demo(sqlite_store, settings)
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(sqlite_store, settings, drivers)
    try:
        vm, volume = await _vm_and_volume(orchestrator, sqlite_store)
        stray, held = [
            await sqlite_store.create(
                Task(
                    id=new_id("task-"),
                    tenant_id="demo",
                    kind=f"volume.{kind}",
                    subject=f"volume/{volume.id}",
                    state=TaskState.RUNNING,
                    data={"params": {"type": "AttachParams", "vm_id": vm.id}},
                )
            )
            for kind in ("attach", "detach")
        ]
        # One the volume does not hold; one it holds though it rests (its end was cut short).
        volume = await sqlite_store.update(
            Volume, volume.id, expected_version=volume.version, task_id=held.id
        )

        async def ended() -> bool:
            tasks = [await sqlite_store.get(Task, t.id) for t in (stray, held)]
            return all(t.state is TaskState.FAILED for t in tasks)

        await eventually(ended, timeout=10)
        for task in (stray, held):
            error = (await sqlite_store.get(Task, task.id)).error
            assert error == f"interrupted; volume {volume.id} is AVAILABLE now"
        settled = await sqlite_store.get(Volume, volume.id)
        assert (settled.state, settled.task_id) == (VolumeState.AVAILABLE, None)
        pool = system.lookup(f"/user/storage/{settled.pool_id}")
        assert await pool.ask(WatchVolumeTasks()) == []  # nothing left to act on
    finally:
        await system.shutdown()
