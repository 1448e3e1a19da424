"""Balancing through the orchestrator on simulated hosts: the plan alone moves nothing, the
balance makes its migrations as tasks and the hosts even out; planning again moves nothing
(converged, and moved VMs cool down); consolidation names the hosts it would empty."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from actors.balancer import BalancePolicy
from actors.host_lifecycle import HostOperation
from actors.registration import bootstrap_demo
from cloudcore.config import DemoSettings
from cloudcore.store import Store
from cloudcore.store.records import VM, Host, TaskState, VMSpec
from hypervisor_drivers.base import HypervisorDriver
from tests.cloud import Cloud, cloud_settings, start_cloud


@pytest.fixture
async def cloud3(sqlite_store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    settings = msgspec.structs.replace(
        cloud_settings(tmp_path), demo=DemoSettings(hosts=3, host_cpus=8, host_memory_mib=8192)
    )
    await bootstrap_demo(sqlite_store, settings)
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(sqlite_store, settings, drivers)
    yield Cloud(orchestrator, sqlite_store, settings, drivers)
    await system.shutdown()


async def _loads(cloud: Cloud) -> dict[str, int]:
    return {h.id: h.memory_mib_used for h in (await cloud.store.list(Host)).items}


async def test_a_crowded_host_is_evened_out_and_a_second_plan_moves_nothing(
    cloud3: Cloud,
) -> None:
    cloud = cloud3
    for other in ("dc1-h2", "dc1-h3"):
        await cloud.orchestrator.set_admin_state(other, HostOperation.DISABLE)
    for n in range(6):
        task = await cloud.wait(
            await cloud.orchestrator.deploy(
                tenant_id="demo",
                datacenter_id="dc1",
                name=f"v{n}",
                spec=VMSpec(cpus=1, memory_mib=1024),
            )
        )
        assert task.state is TaskState.SUCCEEDED, task.error
    for other in ("dc1-h2", "dc1-h3"):
        await cloud.orchestrator.set_admin_state(other, HostOperation.ENABLE)
    before = await _loads(cloud)
    assert before == {"dc1-h1": 6144, "dc1-h2": 0, "dc1-h3": 0}

    dry = await cloud.orchestrator.balance_plan(
        "dc1", BalancePolicy.SPREAD, threshold=0.2, max_moves=20
    )
    assert dry.moves and dry.spread_before == 0.75 and dry.spread_after <= 0.2
    assert all(m.source == "dc1-h1" and m.reason.startswith("spread") for m in dry.moves)
    assert await _loads(cloud) == before  # a plan moves nothing

    made, tasks = await cloud.orchestrator.balance(
        "dc1", BalancePolicy.SPREAD, threshold=0.2, max_moves=20
    )
    assert len(tasks) == len(made.moves) == len(dry.moves)
    for task in tasks:
        assert (await cloud.wait(task)).state is TaskState.SUCCEEDED
    after = await _loads(cloud)
    assert max(after.values()) - min(after.values()) <= 0.2 * 8192
    for move in made.moves:
        assert (await cloud.store.get(VM, move.vm_id)).host_id == move.target

    again = await cloud.orchestrator.balance_plan(
        "dc1", BalancePolicy.SPREAD, threshold=0.2, max_moves=20
    )
    assert again.moves == []
    packed = await cloud.orchestrator.balance_plan(
        "dc1", BalancePolicy.CONSOLIDATE, threshold=0.2, max_moves=20
    )
    moved = {m.vm_id for m in made.moves}
    assert not moved & {m.vm_id for m in packed.moves}  # cooling down: left where they are
