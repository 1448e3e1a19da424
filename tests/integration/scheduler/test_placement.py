"""The scheduler actor on real stores: concurrent placements, groups, explanations, stale views."""

from __future__ import annotations

import asyncio

import pytest

from actors.scheduler import (
    Explain,
    Explanation,
    HostRemoved,
    HostUpdated,
    PlaceVM,
    ReleaseVM,
    ReservationEnded,
    ReserveHost,
    SchedulerActor,
)
from cloudcore.errors import Conflict, NoValidHost, VersionConflict
from cloudcore.runtime import ActorSystem
from cloudcore.store.base import Store
from cloudcore.store.records import VM, AdminState, Host, HostHealth, VMSpec, VMState
from tests.integration.scheduler.conftest import WatchingStore
from tests.integration.scheduler.records import World


async def _all_vms(store: Store, dc_id: str) -> list[VM]:
    vms: list[VM] = []
    after = None
    while True:
        page = await store.list(VM, where={"datacenter_id": dc_id}, after=after, limit=1000)
        vms += page.items
        if (after := page.next_cursor) is None:
            return vms


async def test_200_concurrent_placements_over_two_schedulers_never_overbook(
    store: Store, system: ActorSystem
) -> None:
    world = await World(store).start()
    # Allocatable (CPU x2, memory x1): (8, 8192) takes 4 VMs of 1 CPU/2 GiB, (4, 16384) takes
    # 4, (16, 4096) takes 2, (2, 32768) takes 2 -- CPU binds on some hosts, memory on others.
    sizes = [(4, 8192), (2, 16384), (8, 4096), (1, 32768)] * 3
    hosts = [await world.host(c, m) for c, m in sizes]
    await world.host(admin_state=AdminState.DISABLED)
    await world.host(health=HostHealth.UNREACHABLE)
    fits = sum(min(h.cpus // 1, h.memory_mib // 2048) for h in hosts)
    vms = [await world.vm(1, 2048) for _ in range(200)]
    watching = WatchingStore(store)
    schedulers = [
        system.spawn(SchedulerActor, watching, world.dc.id, name=f"scheduler-{i}") for i in (1, 2)
    ]

    results = await asyncio.gather(
        *(
            schedulers[i % 2].ask(PlaceVM(vm_id=vm.id, expected_version=vm.version))
            for i, vm in enumerate(vms)
        ),
        return_exceptions=True,
    )

    placed = [r for r in results if isinstance(r, VM)]
    refused = [r for r in results if isinstance(r, NoValidHost)]
    assert len(placed) == fits == 36
    assert len(refused) == 200 - fits, [r for r in results if not isinstance(r, VM | NoValidHost)]
    assert all(vm.state is VMState.PLACED and vm.host_id for vm in placed)
    # The two schedulers really raced: the store refused stale claims, and that kept it safe.
    assert watching.refused > 0
    for host in watching.placed_hosts:  # at every claim, not only at the end
        assert host.cpus_used <= host.cpus and host.memory_mib_used <= host.memory_mib
    stored = {vm.id: vm for vm in await _all_vms(store, world.dc.id)}
    for host in hosts:
        on_host = [vm for vm in stored.values() if vm.host_id == host.id]
        now = await store.get(Host, host.id)
        assert now.cpus_used == sum(vm.spec.cpus for vm in on_host) <= now.cpus
        assert now.memory_mib_used == sum(vm.spec.memory_mib for vm in on_host) <= now.memory_mib
    for error in refused:
        assert error.explanation["admin_state"] == 1 and error.explanation["health"] == 1
        assert error.explanation["capacity"] == len(hosts)
    for ref in schedulers:  # refusals are answers, not failures: nobody was restarted
        assert system.tree(ref.path).restarts == 0


async def test_anti_affinity_puts_each_vm_of_a_group_on_its_own_host(
    store: Store, system: ActorSystem
) -> None:
    world = await World(store).start()
    hosts = {(await world.host(8, 65536)).id for _ in range(3)}
    group = [await world.vm(1, 1024, affinity_group="db") for _ in range(4)]
    loner = await world.vm(1, 1024)
    scheduler = system.spawn(SchedulerActor, store, world.dc.id)

    results = await asyncio.gather(
        *(scheduler.ask(PlaceVM(vm_id=vm.id, expected_version=vm.version)) for vm in group),
        return_exceptions=True,
    )

    placed = [r for r in results if isinstance(r, VM)]
    assert {vm.host_id for vm in placed} == hosts  # three VMs, three different hosts
    [refusal] = [r for r in results if isinstance(r, NoValidHost)]
    assert refusal.explanation["anti_affinity"] == 3
    assert "anti_affinity rejected 3" in str(refusal)
    # A VM outside the group still packs onto a host the group uses.
    assert (await scheduler.ask(PlaceVM(vm_id=loner.id, expected_version=loner.version))).host_id

    # A scheduler started later learns the group's placements from the store.
    fresh = system.spawn(SchedulerActor, store, world.dc.id)
    late = await world.vm(1, 1024, affinity_group="db")
    with pytest.raises(NoValidHost, match="anti_affinity rejected 3"):
        await fresh.ask(PlaceVM(vm_id=late.id, expected_version=late.version))
    # ... and of its releases, once told.
    gone = placed[0]
    before = await store.get(VM, gone.id)
    await store.unplace_vm(gone.id, expected_version=before.version)
    await fresh.ask(ReleaseVM.of(before, gone.host_id or ""))
    assert (await fresh.ask(PlaceVM(vm_id=late.id, expected_version=late.version))).host_id == (
        gone.host_id
    )


async def test_affinity_places_the_group_together(store: Store, system: ActorSystem) -> None:
    world = await World(store).start()
    for _ in range(3):
        await world.host(8, 65536)
    group = [await world.vm(1, 1024, affinity_group="app", extra={"affinity": "affinity"})]
    group += [await world.vm(1, 1024, affinity_group="app", extra={"affinity": "affinity"})]
    scheduler = system.spawn(SchedulerActor, store, world.dc.id, weigher="spread")
    first = await scheduler.ask(PlaceVM(vm_id=group[0].id, expected_version=1))
    second = await scheduler.ask(PlaceVM(vm_id=group[1].id, expected_version=1))
    assert first.host_id == second.host_id  # spread alone would have picked another host


async def test_no_fit_says_which_filter_rejected_how_many_hosts_and_changes_nothing(
    store: Store, system: ActorSystem
) -> None:
    world = await World(store).start()
    await world.host(admin_state=AdminState.MAINTENANCE)
    await world.host(health=HostHealth.DEGRADED)
    await world.host(health=HostHealth.UNKNOWN)
    small = [await world.host(2, 4096) for _ in range(2)]
    narrow = await world.host(2, 65536, cpu_ratio=8.0)  # 16 vCPUs, but only 2 cores
    vm = await world.vm(4, 8192)
    scheduler = system.spawn(SchedulerActor, store, world.dc.id)

    with pytest.raises(NoValidHost) as failure:
        await scheduler.ask(PlaceVM(vm_id=vm.id, expected_version=vm.version))

    assert failure.value.explanation == {
        "datacenter": 0,
        "admin_state": 1,
        "health": 2,
        "power": 0,
        "capacity": 3,
        "affinity": 0,
        "anti_affinity": 0,
    }
    assert str(failure.value) == (
        f"no host fits 4 CPUs/8192 MiB in {world.dc.id}: admin_state rejected 1, "
        "health rejected 2, capacity rejected 3"
    )
    unchanged = await store.get(VM, vm.id)
    assert (unchanged.state, unchanged.host_id, unchanged.version) == (VMState.DEFINED, None, 1)
    for host in [*small, narrow]:
        assert (await store.get(Host, host.id)).cpus_used == 0
    explained = await scheduler.ask(Explain(spec=VMSpec(cpus=1, memory_mib=1024), tenant_id="t"))
    assert explained == Explanation(
        rejected={
            "datacenter": 0,
            "admin_state": 1,
            "health": 2,
            "power": 0,
            "capacity": 0,
            "affinity": 0,
            "anti_affinity": 0,
        },
        passed=3,
    )


async def test_a_claim_refused_on_a_stale_view_refreshes_the_host_and_takes_the_next(
    store: Store, system: ActorSystem
) -> None:
    world = await World(store).start()
    fuller = await world.host(4, 8192)  # pack's first choice once something is claimed on it
    other = await world.host(4, 16384)
    await store.claim_host_capacity(fuller.id, cpus=1, memory_mib=1024)
    scheduler = system.spawn(SchedulerActor, store, world.dc.id)
    vm = await world.vm(1, 4096)
    await scheduler.ask(Explain(spec=vm.spec, tenant_id="t"))  # the view is loaded now
    # Behind the scheduler's back, another placement fills the host it would choose.
    await store.claim_host_capacity(fuller.id, cpus=1, memory_mib=6144)

    placed = await scheduler.ask(PlaceVM(vm_id=vm.id, expected_version=vm.version))

    assert placed.host_id == other.id
    # The view learned the store's 7,168 MiB on the fuller host: a 2 GiB VM fits only the other
    # one now (a stale view would still count 7 GiB free there).
    explained = await scheduler.ask(Explain(spec=VMSpec(cpus=1, memory_mib=2048), tenant_id="t"))
    assert explained.passed == 1


async def test_host_messages_keep_the_view_current(store: Store, system: ActorSystem) -> None:
    world = await World(store).start()
    scheduler = system.spawn(SchedulerActor, store, world.dc.id)
    vm = await world.vm(1, 1024)
    with pytest.raises(NoValidHost, match="no hosts known"):
        await scheduler.ask(PlaceVM(vm_id=vm.id, expected_version=1))
    host = await world.host()
    await scheduler.ask(HostUpdated(host=host))
    await scheduler.ask(HostRemoved(host_id=host.id))
    with pytest.raises(NoValidHost, match="no hosts known"):
        await scheduler.ask(PlaceVM(vm_id=vm.id, expected_version=1))
    await scheduler.ask(HostUpdated(host=host))
    assert (await scheduler.ask(PlaceVM(vm_id=vm.id, expected_version=1))).host_id == host.id


async def test_a_stale_vm_version_is_refused_and_nothing_is_claimed(
    store: Store, system: ActorSystem
) -> None:
    world = await World(store).start()
    host = await world.host()
    vm = await world.vm(1, 1024)
    scheduler = system.spawn(SchedulerActor, store, world.dc.id)
    with pytest.raises(VersionConflict):
        await scheduler.ask(PlaceVM(vm_id=vm.id, expected_version=vm.version + 1))
    assert (await store.get(Host, host.id)).cpus_used == 0
    assert system.tree(scheduler.path).restarts == 0


async def test_a_placed_vm_is_not_placed_again(store: Store, system: ActorSystem) -> None:
    world = await World(store).start()
    host = await world.host(4, 4096)
    vm = await world.vm(2, 4096)  # fills the only host
    scheduler = system.spawn(SchedulerActor, store, world.dc.id)
    placed = await scheduler.ask(PlaceVM(vm_id=vm.id, expected_version=vm.version))
    with pytest.raises(Conflict, match="already placed") as failure:
        await scheduler.ask(PlaceVM(vm_id=vm.id, expected_version=placed.version))
    assert not isinstance(failure.value, NoValidHost)
    assert (await store.get(Host, host.id)).cpus_used == 2


async def test_a_reserved_host_counts_in_the_view_before_the_store_has_the_claim(
    store: Store, system: ActorSystem
) -> None:
    world = await World(store).start()
    hosts = {(await world.host(8, 65536)).id for _ in range(2)}
    group = [await world.vm(1, 1024, affinity_group="db") for _ in range(3)]
    scheduler = system.spawn(SchedulerActor, store, world.dc.id)

    first = await scheduler.ask(ReserveHost(vm=group[0]))
    second = await scheduler.ask(ReserveHost(vm=group[1]))
    assert {first, second} == hosts  # the first hold counted, though nothing is written yet
    with pytest.raises(NoValidHost, match="anti_affinity rejected 2"):
        await scheduler.ask(ReserveHost(vm=group[2]))
    # The first is written by its deploy; the second's write fails: its hold is given back.
    await store.place_vm(group[0].id, first, expected_version=group[0].version)
    await scheduler.ask(ReservationEnded(vm_id=group[0].id, host_id=first, placed=True))
    await scheduler.ask(ReservationEnded(vm_id=group[1].id, host_id=second, placed=False))
    assert await scheduler.ask(ReserveHost(vm=group[2])) == second
    with pytest.raises(Conflict, match="already placed"):
        await scheduler.ask(ReserveHost(vm=await store.get(VM, group[0].id)))
