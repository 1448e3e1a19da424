"""A datacenter run again on the same node (its lease fenced, then taken back): it runs anew
once the actors of its earlier run have stopped, and resumes its unfinished tasks at once."""

from __future__ import annotations

from pathlib import Path

from actors.registration import bootstrap_demo
from cloudcore.store import Store
from hypervisor_drivers.base import HypervisorDriver
from tests.cloud import cloud_settings, start_cloud


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
