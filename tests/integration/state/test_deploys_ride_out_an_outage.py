"""Deploys in flight when PostgreSQL stops: every one ends by itself once it is back.

A private cluster (never the shared server) is stopped for about ten seconds under a load of
deploys, then started; within a bound every task is terminal, none RUNNING, and the tenant's quota
usage equals what its VMs hold.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from actors.paging import all_records
from actors.quotas import vm_usage
from actors.registration import bootstrap_demo
from cloudcore.store.postgres import PostgresStore
from cloudcore.store.records import VM, Task, TaskState, VMSpec, VMState
from hypervisor_drivers.base import HypervisorDriver
from tests.cloud import cloud_settings, start_cloud
from tests.integration.state.servers import PrivatePostgres

pytestmark = pytest.mark.integration

DEPLOYS = 120


async def test_deploys_in_flight_during_a_postgres_outage_all_end_and_quota_adds_up(
    postgres_server: PrivatePostgres, tmp_path: Path
) -> None:
    store = await PostgresStore.connect(postgres_server.dsn, pool_size=8, command_timeout=3)
    settings = cloud_settings(tmp_path, step_deadline=15.0, watchdog_interval=1.0)
    system = None
    try:
        await store.upgrade()
        await bootstrap_demo(store, settings)
        for resource in ("vms", "cpus", "memory_mib"):
            await store.set_quota("demo", resource, 1_000_000)
        drivers: dict[str, HypervisorDriver] = {}
        system, orchestrator = await start_cloud(store, settings, drivers)
        tasks = await asyncio.gather(
            *(
                orchestrator.deploy(
                    tenant_id="demo",
                    datacenter_id="dc1",
                    name=f"vm{n}",
                    spec=VMSpec(cpus=1, memory_mib=16),
                )
                for n in range(DEPLOYS)
            )
        )
        in_flight = len(orchestrator.services.runners)
        await asyncio.to_thread(postgres_server.stop)
        assert in_flight >= DEPLOYS // 4  # the outage hits deploys under way
        await asyncio.sleep(10)  # the outage itself: no event marks its end
        await asyncio.to_thread(postgres_server.start)

        ended = await asyncio.gather(*(orchestrator.wait(t.id, timeout=90) for t in tasks))
        assert all(t.state in {TaskState.SUCCEEDED, TaskState.FAILED} for t in ended)
        running = await store.list(Task, where={"state": TaskState.RUNNING}, limit=1000)
        assert running.items == []

        held = {"vms": 0, "cpus": 0, "memory_mib": 0}
        async for vm in all_records(store, VM, {"tenant_id": "demo"}):
            if vm.state is not VMState.DELETED:
                for resource, amount in vm_usage(vm.spec).items():
                    held[resource] += amount
        used = {q.resource: q.used for q in await store.get_quotas("demo")}
        assert used == held
    finally:
        if system is not None:
            await system.shutdown()
        await store.close()
