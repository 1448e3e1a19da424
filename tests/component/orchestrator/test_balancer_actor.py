"""The balancer of a datacenter on simulated hosts: its stored policy applied in rounds (the
migrations as tasks, then rounds that move nothing), and power saving under ``consolidate``: a
host emptied goes to STANDBY (no VM is placed there), and a deploy that needs its capacity
wakes it and lands on it after the wake-up delay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from actors.balancer import BalancePlan
from actors.balancing import LastPlan, Rebalance
from actors.host_lifecycle import HostOperation
from actors.registration import bootstrap_demo
from cloudcore.config import DemoSettings
from cloudcore.errors import NotFound
from cloudcore.store import Store
from cloudcore.store.records import (
    VM,
    BalancePolicy,
    Datacenter,
    Host,
    HostPower,
    TaskState,
    VMSpec,
)
from hypervisor_drivers.base import HypervisorDriver
from hypervisor_drivers.libvirt.driver import LibvirtDriver
from tests.cloud import Cloud, cloud_settings, start_cloud
from tests.waiting import eventually


@pytest.fixture
async def cloud3(sqlite_store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    settings = msgspec.structs.replace(
        cloud_settings(tmp_path, balance_interval=3600.0, host_wake_delay=0.5),
        demo=DemoSettings(hosts=3, host_cpus=8, host_memory_mib=4096),
    )
    await bootstrap_demo(sqlite_store, settings)
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(sqlite_store, settings, drivers)
    yield Cloud(orchestrator, sqlite_store, settings, drivers)
    await system.shutdown()


async def _deploy_on(cloud: Cloud, host_id: str, count: int, memory_mib: int = 1024) -> None:
    """``count`` VMs on ``host_id`` (the other hosts disabled meanwhile)."""
    others = [h for h in ("dc1-h1", "dc1-h2", "dc1-h3") if h != host_id]
    for other in others:
        await cloud.orchestrator.set_admin_state(other, HostOperation.DISABLE)
    for n in range(count):
        task = await cloud.wait(
            await cloud.orchestrator.deploy(
                tenant_id="demo",
                datacenter_id="dc1",
                name=f"{host_id}-v{n}",
                spec=VMSpec(cpus=1, memory_mib=memory_mib),
            )
        )
        assert task.state is TaskState.SUCCEEDED, task.error
    for other in others:
        await cloud.orchestrator.set_admin_state(other, HostOperation.ENABLE)


async def _round(cloud: Cloud) -> BalancePlan | None:
    """A round of the balancer (None: off, or the last round's migrations in flight)."""
    balancer = cloud.orchestrator.system.lookup("/user/dc/dc1/balancer")
    made: BalancePlan | None = await balancer.ask(Rebalance(), timeout=20)
    return made


async def _settled(cloud: Cloud) -> BalancePlan | None:
    """The balancer's last plan, once every one of its migrations ended with its VM on the
    move's target."""
    balancer = cloud.orchestrator.system.lookup("/user/dc/dc1/balancer")
    made: BalancePlan | None = await balancer.ask(LastPlan())
    for move in made.moves if made else []:

        async def moved(vm_id: str = move.vm_id) -> bool:
            return (await cloud.store.get(VM, vm_id)).task_id is None

        await eventually(moved)
        assert (await cloud.store.get(VM, move.vm_id)).host_id == move.target
    return made


async def _loads(cloud: Cloud) -> dict[str, int]:
    return {h.id: h.memory_mib_used for h in (await cloud.store.list(Host)).items}


async def test_the_policy_is_stored_and_off_moves_nothing(cloud3: Cloud) -> None:
    cloud = cloud3
    assert (await cloud.store.get(Datacenter, "dc1")).balance_policy is BalancePolicy.OFF
    await _deploy_on(cloud, "dc1-h1", 3)
    assert await _round(cloud) is None  # off: no plan, nothing moves
    dc = await cloud.orchestrator.set_balance_policy("dc1", BalancePolicy.SPREAD)
    assert dc.balance_policy is BalancePolicy.SPREAD
    assert (await cloud.store.get(Datacenter, "dc1")).balance_policy is BalancePolicy.SPREAD
    with pytest.raises(NotFound):
        await cloud.orchestrator.set_balance_policy("nope", BalancePolicy.SPREAD)


async def test_spread_evens_the_hosts_out_then_its_rounds_move_nothing(cloud3: Cloud) -> None:
    cloud = cloud3
    await _deploy_on(cloud, "dc1-h1", 6, memory_mib=512)
    await cloud.orchestrator.set_balance_policy("dc1", BalancePolicy.SPREAD)  # runs a round
    left: dict[str, str] = {}  # VM id: the host a round moved it from
    seen: list[BalancePlan] = []
    for _ in range(4):  # a round waits while the last one's migrations are in flight
        await _round(cloud)
        made = await _settled(cloud)
        if made is None or any(made is p for p in seen):
            continue
        seen.append(made)
        for move in made.moves:
            assert left.get(move.vm_id) != move.target, "a VM went back to a host it left"
            left[move.vm_id] = move.source
    assert seen and seen[0].moves
    loads = await _loads(cloud)
    assert max(loads.values()) - min(loads.values()) <= 0.2 * 4096, loads
    again = await _round(cloud)
    assert again is not None and again.moves == []
    assert await _loads(cloud) == loads


async def _consolidated(cloud: Cloud) -> None:
    """dc1-h1 (one VM) emptied onto dc1-h2 (two) and put to standby; dc1-h3 disabled."""
    await _deploy_on(cloud, "dc1-h1", 1)
    await _deploy_on(cloud, "dc1-h2", 2)
    await cloud.orchestrator.set_admin_state("dc1-h3", HostOperation.DISABLE)  # out of the way
    await cloud.orchestrator.set_balance_policy("dc1", BalancePolicy.CONSOLIDATE)

    async def asleep() -> bool:
        await _round(cloud)
        await _settled(cloud)
        host = await cloud.store.get(Host, "dc1-h1")
        return host.power_state is HostPower.STANDBY

    await eventually(asleep)  # its VM moved to dc1-h2, then the emptied host went to standby
    assert (await _loads(cloud))["dc1-h2"] == 3072


async def test_consolidation_puts_an_empty_host_to_standby_and_a_deploy_wakes_it(
    cloud3: Cloud,
) -> None:
    cloud = cloud3
    await _consolidated(cloud)
    driver = cloud.drivers["dc1-h1"]
    assert isinstance(driver, LibvirtDriver) and driver.standby  # through the host's driver

    # dc1-h2 has 1024 MiB free, dc1-h3 is disabled: only the standby host can take 2048 MiB
    task = await cloud.wait(
        await cloud.orchestrator.deploy(
            tenant_id="demo",
            datacenter_id="dc1",
            name="big",
            spec=VMSpec(cpus=1, memory_mib=2048),
        )
    )
    assert task.state is TaskState.SUCCEEDED, task.error
    vm = await cloud.store.get(VM, task.subject.removeprefix("vm/"))
    assert vm.host_id == "dc1-h1"
    assert (await cloud.store.get(Host, "dc1-h1")).power_state is HostPower.ON
    assert not driver.standby


async def test_a_drain_that_needs_a_standby_host_wakes_it(cloud3: Cloud) -> None:
    cloud = cloud3
    await _consolidated(cloud)
    await cloud.orchestrator.set_balance_policy("dc1", BalancePolicy.OFF)  # no standby again
    task = await cloud.wait(await cloud.orchestrator.maintain("dc1-h2"), timeout=60)
    assert task.state is TaskState.SUCCEEDED, task.error  # its 3 VMs went to dc1-h1, woken
    assert (await _loads(cloud))["dc1-h1"] == 3072
    assert (await cloud.store.get(Host, "dc1-h1")).power_state is HostPower.ON
