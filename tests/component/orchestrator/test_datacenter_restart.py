"""A datacenter run again on the same node (its lease fenced, then taken back): it runs anew
once the actors of its earlier run have stopped, and resumes its unfinished tasks at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from actors.journal import FINAL, Journal
from actors.orchestrator import _write_deploy
from actors.registration import bootstrap_demo
from actors.watchdog import Runners
from cloudcore.store import Store
from cloudcore.store.records import VM, TaskState, VMSpec, VMState
from hypervisor_drivers.base import HypervisorDriver
from tests.cloud import cloud_settings, start_cloud


class _Counting(Runners):
    """Runners that remember the most tasks driven at once."""

    __slots__ = ("most",)

    def __init__(self) -> None:
        super().__init__()
        self.most = 0

    def add(self, task_id: str) -> None:
        super().add(task_id)
        self.most = max(self.most, len(self))


async def test_a_datacenter_run_again_while_its_old_actors_stop_runs_once_they_ended(
    sqlite_store: Store, tmp_path: Path
) -> None:
    settings = cloud_settings(tmp_path)
    await bootstrap_demo(sqlite_store, settings)
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(sqlite_store, settings, drivers)
    try:
        await orchestrator.drop_datacenter("dc1", timeout=0)  # asked to stop, not yet done
        assert system.tree("/user/dc/dc1").status == "stopping"
        await orchestrator.run_datacenter("dc1")
        assert orchestrator.running() == ["dc1"]
        assert system.tree("/user/dc/dc1").status == "running"  # a new run, not the old one
    finally:
        await system.shutdown()


async def test_deploys_found_running_at_a_start_are_resumed_at_once_a_batch_at_a_time(
    sqlite_store: Store, tmp_path: Path
) -> None:
    settings = cloud_settings(tmp_path, resume_batch=2, watchdog_interval=3600.0)
    await bootstrap_demo(sqlite_store, settings)
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(sqlite_store, settings, drivers)
    try:
        await orchestrator.drop_datacenter("dc1")  # as a crash leaves it: nothing runs dc1
        written = [
            await _write_deploy(
                sqlite_store,
                tenant_id="demo",
                datacenter_id="dc1",
                name=f"cut{n}",
                spec=VMSpec(cpus=1, memory_mib=256),
                start=True,
                state=TaskState.RUNNING,
            )
            for n in range(6)
        ]
        counting = _Counting()
        orchestrator.services.runners = counting
        await orchestrator.run_datacenter("dc1")  # the restart: resumed without a watchdog pass
        done = await asyncio.gather(
            *(orchestrator.wait(task.id, timeout=30) for _, task in written)
        )
        assert [t.state for t in done] == [TaskState.SUCCEEDED] * 6, [t.error for t in done]
        assert counting.most == 2  # two at a time, the next as each ended
    finally:
        await system.shutdown()


async def test_an_operation_a_crash_left_running_is_settled_right_after_the_start(
    sqlite_store: Store, tmp_path: Path
) -> None:
    settings = cloud_settings(tmp_path, watchdog_interval=3600.0)  # no periodic pass in time
    await bootstrap_demo(sqlite_store, settings)
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(sqlite_store, settings, drivers)
    try:
        deployed = await orchestrator.deploy(
            tenant_id="demo", datacenter_id="dc1", name="web", spec=VMSpec(cpus=1, memory_mib=256)
        )
        assert (await orchestrator.wait(deployed.id)).state is TaskState.SUCCEEDED
        vm_id = deployed.subject.removeprefix("vm/")
        await orchestrator.drop_datacenter("dc1")
        # A reboot the crash cut off: RUNNING in the store, nothing at it.
        journal = await Journal.begin(
            sqlite_store,
            kind="vm.reboot",
            subject=f"vm/{vm_id}",
            tenant_id="demo",
            waiters=orchestrator.services.waiters,
        )
        await orchestrator.run_datacenter("dc1")
        done = await orchestrator.wait(journal.task.id, timeout=10)
        assert done.state in FINAL
        assert done.error is not None and "interrupted" in done.error
        assert (await sqlite_store.get(VM, vm_id)).state is VMState.RUNNING
    finally:
        await system.shutdown()


async def test_new_deploys_in_flight_do_not_hold_the_resumed_ones_back(
    sqlite_store: Store, tmp_path: Path
) -> None:
    settings = cloud_settings(
        tmp_path, resume_batch=1, watchdog_interval=3600.0, schedule_attempts=1000
    )
    await bootstrap_demo(sqlite_store, settings)
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(sqlite_store, settings, drivers)
    try:
        await orchestrator.drop_datacenter("dc1")
        written = [
            await _write_deploy(
                sqlite_store,
                tenant_id="demo",
                datacenter_id="dc1",
                name=f"cut{n}",
                spec=VMSpec(cpus=1, memory_mib=256),
                start=True,
                state=TaskState.RUNNING,
            )
            for n in range(2)
        ]
        await orchestrator.run_datacenter("dc1")
        # A new deploy that fits nowhere: its runner retries (and lives) all along.
        await orchestrator.deploy(
            tenant_id="demo", datacenter_id="dc1", name="huge", spec=VMSpec(cpus=4, memory_mib=8192)
        )
        done = await asyncio.gather(
            *(orchestrator.wait(task.id, timeout=15) for _, task in written)
        )
        assert [t.state for t in done] == [TaskState.SUCCEEDED] * 2, [t.error for t in done]
    finally:
        await system.shutdown()
