"""Maintenance of a host through the orchestrator, on simulated hosts (libvirt's test driver,
whose migration is the libvirt driver's simulated move): the host drains by migration, a few
at a time, and ends in MAINTENANCE; one that cannot drain ends in ERROR_IN_MAINTENANCE naming
each VM that stays and why; cancel makes it ENABLED again; illegal moves are refused whole."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from actors.host_lifecycle import HostOperation
from actors.lifecycle import Operation
from actors.registration import bootstrap_demo
from cloudcore.config import DemoSettings
from cloudcore.errors import IllegalTransition
from cloudcore.store import Store
from cloudcore.store.records import VM, AdminState, Host, TaskState, VMSpec, VMState
from hypervisor_drivers.base import HypervisorDriver
from tests.cloud import Cloud, cloud_settings, start_cloud
from tests.waiting import eventually

_SPEC = VMSpec(cpus=1, memory_mib=256)


@pytest.fixture
async def cloud3(sqlite_store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    settings = msgspec.structs.replace(
        cloud_settings(tmp_path, drain_concurrency=2),
        demo=DemoSettings(hosts=3, host_cpus=4, host_memory_mib=4096),
    )
    await bootstrap_demo(sqlite_store, settings)
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(sqlite_store, settings, drivers)
    yield Cloud(orchestrator, sqlite_store, settings, drivers)
    await system.shutdown()


async def _on(cloud: Cloud, host_id: str, count: int, start: bool = True) -> list[VM]:
    """``count`` VMs deployed on ``host_id`` (the other hosts disabled meanwhile)."""
    others = [h for h in cloud.drivers if h != host_id]
    for other in others:
        await cloud.orchestrator.set_admin_state(other, HostOperation.DISABLE)
    vms = []
    for n in range(count):
        task = await cloud.wait(
            await cloud.orchestrator.deploy(
                tenant_id="demo", datacenter_id="dc1", name=f"v{n}", spec=_SPEC, start=start
            )
        )
        assert task.state is TaskState.SUCCEEDED, task.error
        vms.append(await cloud.store.get(VM, task.subject.removeprefix("vm/")))
    for other in others:
        await cloud.orchestrator.set_admin_state(other, HostOperation.ENABLE)
    assert {vm.host_id for vm in vms} == {host_id}
    return vms


async def _uuids(driver: HypervisorDriver) -> set[str]:
    return {v.uuid for v in await driver.list_vms()}


async def _admin_state(cloud: Cloud, host_id: str) -> AdminState:
    return (await cloud.store.get(Host, host_id)).admin_state


async def test_a_host_in_maintenance_drains_by_migration_a_few_at_a_time(cloud3: Cloud) -> None:
    cloud = cloud3
    vms = await _on(cloud, "dc1-h1", 4) + await _on(cloud, "dc1-h1", 2, start=False)

    task = await cloud.orchestrator.maintain("dc1-h1")
    assert task.kind == "host.maintenance" and task.subject == "host/dc1-h1"
    ended = await cloud.wait(task, timeout=60)
    assert ended.state is TaskState.SUCCEEDED, ended.error
    assert await _admin_state(cloud, "dc1-h1") is AdminState.MAINTENANCE

    for before in vms:
        after = await cloud.store.get(VM, before.id)
        assert after.host_id in ("dc1-h2", "dc1-h3") and after.state is before.state
        on = [
            h for h, d in cloud.drivers.items() if before.id in {v.uuid for v in await d.list_vms()}
        ]
        assert on == [after.host_id]  # on exactly one hypervisor, the one the store says
    hosts = {h.id: h for h in (await cloud.store.list(Host)).items}
    assert (hosts["dc1-h1"].cpus_used, hosts["dc1-h1"].memory_mib_used) == (0, 0)
    assert sum(h.cpus_used for h in hosts.values()) == len(vms)
    (step,) = await cloud.store.list_steps(task.id)
    assert (step.name, step.data["moved"], step.data["total"]) == ("drain", 6, 6)

    # Never more than drain_concurrency (2) VMs MIGRATING at once, in commit order.
    async def history() -> list[tuple[str, str]] | None:
        events = await cloud.orchestrator.services.events.read(limit=10_000)
        migrated = [e for e in events if e.type == "vm.migrated"]
        if len(migrated) < len(vms):
            return None
        return [(e.subject, e.data["state"]) for e in events if e.type == "vm.state_changed"]

    in_flight, peak = set(), 0
    for subject, state in await eventually(history):
        if state == "MIGRATING":
            in_flight.add(subject)
        else:
            in_flight.discard(subject)
        peak = max(peak, len(in_flight))
    assert 1 <= peak <= 2

    # New VMs go elsewhere; cancel makes it ENABLED again.
    with pytest.raises(IllegalTransition, match="allowed now: enable, cancel_maintenance"):
        await cloud.orchestrator.set_admin_state("dc1-h1", HostOperation.DISABLE)
    host = await cloud.orchestrator.set_admin_state("dc1-h1", HostOperation.CANCEL)
    assert host.admin_state is AdminState.ENABLED


async def test_a_host_that_cannot_drain_names_each_vm_that_stays_and_why(cloud: Cloud) -> None:
    running, paused = await _on(cloud, "dc1-h1", 2)
    await cloud.wait(await cloud.orchestrator.operate(paused.id, Operation.PAUSE))
    await cloud.orchestrator.set_admin_state("dc1-h2", HostOperation.DISABLE)  # nowhere to go

    ended = await cloud.wait(await cloud.orchestrator.maintain("dc1-h1"), timeout=60)
    assert ended.state is TaskState.FAILED
    error = ended.error or ""
    assert "2 VMs could not move off dc1-h1" in error
    assert f"VM {paused.id}: it is PAUSED" in error
    assert f"VM {running.id}: NoValidHost" in error and "admin_state" in error
    assert await _admin_state(cloud, "dc1-h1") is AdminState.ERROR_IN_MAINTENANCE
    for vm in (running, paused):  # where they were, as they were
        after = await cloud.store.get(VM, vm.id)
        assert after.host_id == "dc1-h1" and after.task_id is None
    assert (await cloud.store.get(VM, running.id)).state is VMState.RUNNING

    # Once there is room, maintenance again moves what can move; the paused VM still says why.
    await cloud.orchestrator.set_admin_state("dc1-h2", HostOperation.ENABLE)
    again = await cloud.wait(await cloud.orchestrator.maintain("dc1-h1"), timeout=60)
    assert again.state is TaskState.FAILED and "1 VMs could not move" in (again.error or "")
    assert (await cloud.store.get(VM, running.id)).host_id == "dc1-h2"

    host = await cloud.orchestrator.set_admin_state("dc1-h1", HostOperation.CANCEL)
    assert host.admin_state is AdminState.ENABLED
    with pytest.raises(IllegalTransition, match="cannot cancel_maintenance host dc1-h1"):
        await cloud.orchestrator.set_admin_state("dc1-h1", HostOperation.CANCEL)


async def test_an_empty_host_goes_to_maintenance_and_a_second_request_is_refused(
    cloud: Cloud,
) -> None:
    ended = await cloud.wait(await cloud.orchestrator.maintain("dc1-h2"))
    assert ended.state is TaskState.SUCCEEDED
    assert await _admin_state(cloud, "dc1-h2") is AdminState.MAINTENANCE
    with pytest.raises(IllegalTransition, match="it is MAINTENANCE"):
        await cloud.orchestrator.maintain("dc1-h2")
    host = await cloud.orchestrator.set_admin_state("dc1-h2", HostOperation.ENABLE)
    assert host.admin_state is AdminState.ENABLED
