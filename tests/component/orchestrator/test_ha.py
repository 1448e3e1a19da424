"""HA on simulated hosts (libvirt's test driver): a host made DOWN (its hypervisor gone: the
connection closed, its host file removed, so reconnecting fails) past the grace period is
fenced (a simulated fence, said so), then its HA VMs are restarted on other hosts, highest
priority first, each by a journaled deploy task; VMs without HA stay, STOPPED, with a fault.
No VM is restarted before its host is fenced, and none runs on two hosts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from actors.ha import CheckHosts
from actors.host_lifecycle import HostOperation
from actors.registration import bootstrap_demo
from cloudcore.config import DemoSettings
from cloudcore.errors import BackendUnavailable
from cloudcore.store import Store
from cloudcore.store.records import (
    VM,
    Host,
    HostHealth,
    HostPower,
    Task,
    TaskState,
    VMSpec,
    VMState,
)
from hypervisor_drivers.base import HypervisorDriver
from tests.cloud import Cloud, cloud_settings, start_cloud
from tests.waiting import eventually


async def _cloud(store: Store, tmp_path: Path, hosts: int) -> AsyncIterator[Cloud]:
    settings = msgspec.structs.replace(
        cloud_settings(tmp_path, ha_grace=0.3, ha_check_interval=3600.0, reconnect_delay=0.1),
        demo=DemoSettings(hosts=hosts, host_cpus=4, host_memory_mib=4096),
    )
    await bootstrap_demo(store, settings)
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(store, settings, drivers)
    yield Cloud(orchestrator, store, settings, drivers)
    await system.shutdown()


@pytest.fixture
async def cloud3(sqlite_store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    async for cloud in _cloud(sqlite_store, tmp_path, 3):
        yield cloud


@pytest.fixture
async def cloud2(sqlite_store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    async for cloud in _cloud(sqlite_store, tmp_path, 2):
        yield cloud


async def _deploy(cloud: Cloud, name: str, memory: int, ha: bool, priority: int = 0) -> VM:
    spec = VMSpec(cpus=1, memory_mib=memory, ha=ha, ha_priority=priority)
    task = await cloud.wait(
        await cloud.orchestrator.deploy(tenant_id="demo", datacenter_id="dc1", name=name, spec=spec)
    )
    assert task.state is TaskState.SUCCEEDED, task.error
    return await cloud.store.get(VM, task.subject.removeprefix("vm/"))


async def _only_on(cloud: Cloud, host_id: str, vms: list[tuple[str, int, bool, int]]) -> list[VM]:
    others = [h for h in cloud.drivers if h != host_id]
    for other in others:
        await cloud.orchestrator.set_admin_state(other, HostOperation.DISABLE)
    placed = [await _deploy(cloud, *vm) for vm in vms]
    for other in others:
        await cloud.orchestrator.set_admin_state(other, HostOperation.ENABLE)
    assert {vm.host_id for vm in placed} == {host_id}
    return placed


async def _kill(cloud: Cloud, tmp_path: Path, host_id: str) -> None:
    """The host dies: its hypervisor (in this process) is gone and cannot be reached again."""
    (tmp_path / "hosts" / f"{host_id}.xml").unlink()
    await cloud.drivers[host_id].close()
    await cloud.orchestrator.sweep("dc1", host_id)  # the sweep finds it gone

    async def down() -> bool:
        return (await cloud.store.get(Host, host_id)).health is HostHealth.UNREACHABLE

    await eventually(down)


async def _check(cloud: Cloud) -> list[str]:
    ha = cloud.orchestrator.system.lookup("/user/dc/dc1/ha")
    acted: list[str] = await ha.ask(CheckHosts())
    return acted


async def _where(cloud: Cloud, vm_id: str) -> list[str]:
    """The hosts whose hypervisor has the VM (a dead host's hypervisor is gone: none)."""
    found = []
    for host_id, driver in cloud.drivers.items():
        try:
            uuids = {v.uuid for v in await driver.list_vms()}
        except BackendUnavailable:
            continue
        if vm_id in uuids:
            found.append(host_id)
    return found


async def test_a_dead_host_is_fenced_then_its_ha_vms_restart_elsewhere_by_priority(
    cloud3: Cloud, tmp_path: Path
) -> None:
    cloud = cloud3
    low, high, mid, plain = await _only_on(
        cloud,
        "dc1-h1",
        [
            ("low", 512, True, 1),
            ("high", 512, True, 10),
            ("mid", 512, True, 5),
            ("plain", 512, False, 0),
        ],
    )
    await _kill(cloud, tmp_path, "dc1-h1")
    # Within the grace period nothing happens: the host may come back.
    assert await _check(cloud) == []
    assert (await cloud.store.get(VM, high.id)).host_id == "dc1-h1"

    async def recovered() -> bool:
        await _check(cloud)
        vms = [await cloud.store.get(VM, vm.id) for vm in (low, high, mid)]
        return all(vm.state is VMState.RUNNING and vm.host_id != "dc1-h1" for vm in vms)

    await eventually(recovered, timeout=30, interval=0.1)

    host = await cloud.store.get(Host, "dc1-h1")
    assert host.health is HostHealth.FENCED and (host.cpus_used, host.memory_mib_used) == (1, 512)
    for vm in (low, high, mid):
        after = await cloud.store.get(VM, vm.id)
        assert await _where(cloud, vm.id) == [after.host_id]  # running on exactly one host
    stopped = await cloud.store.get(VM, plain.id)
    assert (stopped.host_id, stopped.state) == ("dc1-h1", VMState.STOPPED)
    assert "not HA" in (stopped.fault or "")

    # One journaled deploy per restart, started in priority order, one priority at a time.
    tasks = [
        t for t in (await cloud.store.list(Task, limit=100)).items if "ha_restart_from" in t.data
    ]
    assert [t.subject.removeprefix("vm/") for t in tasks] == [high.id, mid.id, low.id]
    assert all(t.state is TaskState.SUCCEEDED for t in tasks)
    events = await cloud.orchestrator.services.events.read(limit=10_000)
    (fenced,) = [e for e in events if e.type == "host.fenced"]
    assert fenced.subject == "host/dc1-h1" and "simulated" in fenced.data["how"]
    # One vm.ha_restart event per restart (counted by the metrics), naming its task.
    restarts = [e for e in events if e.type == "vm.ha_restart"]
    assert sorted((e.subject, e.data["task_id"]) for e in restarts) == sorted(
        (t.subject, t.id) for t in tasks
    )
    assert {e.data["from_host"] for e in restarts} == {"dc1-h1"}
    assert await _check(cloud) == ["dc1-h1"]  # fenced, nothing left to restart: no duplicate
    assert (
        len(
            [
                t
                for t in (await cloud.store.list(Task, limit=100)).items
                if "ha_restart_from" in t.data
            ]
        )
        == 3
    )


async def test_with_room_for_one_the_highest_priority_vm_is_the_one_restarted(
    cloud2: Cloud, tmp_path: Path
) -> None:
    cloud = cloud2
    first, second = await _only_on(cloud, "dc1-h1", [("a", 2048, True, 1), ("b", 2048, True, 9)])
    await _only_on(cloud, "dc1-h2", [("filler", 2048, False, 0)])  # room for one more
    await _kill(cloud, tmp_path, "dc1-h1")

    async def settled() -> VM | None:
        await _check(cloud)
        vm = await cloud.store.get(VM, first.id)
        return vm if vm.state is VMState.ERROR else None

    lost = await eventually(settled, timeout=30, interval=0.1)
    assert "NoValidHost" in (lost.fault or "")
    won = await cloud.store.get(VM, second.id)
    assert (won.host_id, won.state) == ("dc1-h2", VMState.RUNNING)
    assert await _where(cloud, second.id) == ["dc1-h2"]


async def test_a_host_asleep_for_power_saving_is_not_fenced_when_it_does_not_answer(
    cloud3: Cloud, tmp_path: Path
) -> None:
    host = await cloud3.store.get(Host, "dc1-h2")
    await cloud3.store.update(
        Host, host.id, expected_version=host.version, power_state=HostPower.STANDBY
    )
    await _kill(cloud3, tmp_path, "dc1-h2")  # asleep: its hypervisor does not answer
    await _kill(cloud3, tmp_path, "dc1-h3")  # dead

    async def fenced() -> list[str]:
        return await _check(cloud3)

    assert await eventually(fenced) == ["dc1-h3"]  # once past the grace: the dead one only
    assert (await cloud3.store.get(Host, "dc1-h3")).health is HostHealth.FENCED
    assert (await cloud3.store.get(Host, "dc1-h2")).health is HostHealth.UNREACHABLE
