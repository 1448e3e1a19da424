"""Host capacity: claims are atomic and never overbook; placement is one transaction."""

from __future__ import annotations

import asyncio

import pytest

from cloudcore.errors import (
    Conflict,
    InsufficientCapacity,
    InvalidRecord,
    NotFound,
    VersionConflict,
)
from cloudcore.store.base import Store
from cloudcore.store.records import VM, AdminState, Host, HostHealth, HostPower, VMSpec, VMState
from tests.contract.store.factory import Factory


async def test_a_claim_that_fits_adds_to_the_used_capacity(store: Store, make: Factory) -> None:
    host = await make.host(await make.datacenter(), cpus=8, memory_mib=8192)

    after = await store.claim_host_capacity(host.id, cpus=3, memory_mib=4096)

    assert (after.cpus_used, after.memory_mib_used) == (3, 4096)
    assert await store.get(Host, host.id) == after


@pytest.mark.parametrize(
    ("fields", "cpus", "memory"),
    [
        ({}, 9, 1),
        ({}, 1, 8193),
        ({"health": HostHealth.UNREACHABLE}, 1, 1),
        ({"admin_state": AdminState.MAINTENANCE}, 1, 1),
        ({"power_state": HostPower.STANDBY}, 1, 1),
        ({"power_state": HostPower.WAKING}, 1, 1),
    ],
)
async def test_a_claim_that_does_not_fit_or_an_unschedulable_host_is_refused(
    store: Store, make: Factory, fields: dict[str, object], cpus: int, memory: int
) -> None:
    host = await make.host(await make.datacenter(), cpus=8, memory_mib=8192, **fields)

    with pytest.raises(InsufficientCapacity):
        await store.claim_host_capacity(host.id, cpus=cpus, memory_mib=memory)
    assert await store.get(Host, host.id) == host


async def test_concurrent_claims_never_overbook(store: Store, make: Factory) -> None:
    host = await make.host(await make.datacenter(), cpus=8, memory_mib=1 << 20)

    results = await asyncio.gather(
        *(store.claim_host_capacity(host.id, cpus=1, memory_mib=1) for _ in range(20)),
        return_exceptions=True,
    )

    assert sum(isinstance(r, Host) for r in results) == 8
    assert sum(isinstance(r, InsufficientCapacity) for r in results) == 12
    assert (await store.get(Host, host.id)).cpus_used == 8


async def test_release_gives_capacity_back_but_never_more_than_claimed(
    store: Store, make: Factory
) -> None:
    host = await make.host(await make.datacenter())
    await store.claim_host_capacity(host.id, cpus=2, memory_mib=1024)

    with pytest.raises(Conflict):
        await store.release_host_capacity(host.id, cpus=3, memory_mib=1024)
    after = await store.release_host_capacity(host.id, cpus=2, memory_mib=1024)

    assert (after.cpus_used, after.memory_mib_used) == (0, 0)


async def test_claims_refuse_unknown_hosts_and_negative_amounts(
    store: Store, make: Factory
) -> None:
    host = await make.host(await make.datacenter())
    with pytest.raises(NotFound):
        await store.claim_host_capacity("nope", cpus=1, memory_mib=1)
    with pytest.raises(InvalidRecord, match="cpus"):
        await store.claim_host_capacity(host.id, cpus=-1, memory_mib=1)


async def test_used_capacity_is_not_writable_through_update(store: Store, make: Factory) -> None:
    host = await make.host(await make.datacenter())
    with pytest.raises(InvalidRecord, match="cpus_used"):
        await store.update(Host, host.id, expected_version=1, cpus_used=0)


async def test_place_sets_the_host_and_claims_the_spec_together(
    store: Store, make: Factory
) -> None:
    dc = await make.datacenter()
    host = await make.host(dc, cpus=8, memory_mib=8192)
    vm = await make.vm(await make.tenant(), dc, spec=VMSpec(cpus=3, memory_mib=3000))

    placed, claimed = await store.place_vm(vm.id, host.id, expected_version=1)

    assert (placed.host_id, placed.state, placed.version) == (host.id, VMState.PLACED, 2)
    assert (claimed.cpus_used, claimed.memory_mib_used) == (3, 3000)

    back = await store.unplace_vm(vm.id, expected_version=2)
    assert (back.host_id, back.state) == (None, VMState.DEFINED)
    assert (await store.get(Host, host.id)).cpus_used == 0


async def test_a_placement_that_does_not_fit_changes_neither_vm_nor_host(
    store: Store, make: Factory
) -> None:
    dc = await make.datacenter()
    host = await make.host(dc, cpus=2, memory_mib=8192)
    vm = await make.vm(await make.tenant(), dc, spec=VMSpec(cpus=4, memory_mib=1024))

    with pytest.raises(InsufficientCapacity):
        await store.place_vm(vm.id, host.id, expected_version=1)

    assert await store.get(VM, vm.id) == vm
    assert await store.get(Host, host.id) == host


async def test_placement_refuses_a_stale_version_or_a_placed_vm(
    store: Store, make: Factory
) -> None:
    dc = await make.datacenter()
    host = await make.host(dc)
    vm = await make.vm(await make.tenant(), dc)

    with pytest.raises(VersionConflict):
        await store.place_vm(vm.id, host.id, expected_version=9)
    await store.place_vm(vm.id, host.id, expected_version=1)
    with pytest.raises(Conflict, match="already placed"):
        await store.place_vm(vm.id, host.id, expected_version=2)
    with pytest.raises(VersionConflict):
        await store.unplace_vm(vm.id, expected_version=1)
    assert (await store.get(Host, host.id)).cpus_used == 2


@pytest.mark.parametrize("target_held", [False, True], ids=["claimed-now", "held-before"])
async def test_a_move_leaves_exactly_the_vm_claim_on_the_target(
    store: Store, make: Factory, target_held: bool
) -> None:
    dc = await make.datacenter()
    source = await make.host(dc, cpus=8, memory_mib=8192)
    target = await make.host(dc, cpus=8, memory_mib=8192)
    vm = await make.vm(await make.tenant(), dc, spec=VMSpec(cpus=3, memory_mib=3000))
    placed, _ = await store.place_vm(vm.id, source.id, expected_version=1)
    if target_held:  # a migration's hold, taken before anything moved
        await store.claim_host_capacity(target.id, cpus=3, memory_mib=3000)

    moved, there = await store.move_vm(
        vm.id, target.id, expected_version=placed.version, target_held=target_held
    )

    assert moved.host_id == target.id
    assert (there.cpus_used, there.memory_mib_used) == (3, 3000)
    assert await store.get(Host, target.id) == there
    assert (await store.get(Host, source.id)).cpus_used == 0


async def test_a_migration_hold_is_taken_and_given_back_with_the_vm_change(
    store: Store, make: Factory
) -> None:
    dc = await make.datacenter()
    source = await make.host(dc, cpus=8, memory_mib=8192)
    target = await make.host(dc, cpus=4, memory_mib=4096)
    vm = await make.vm(await make.tenant(), dc, spec=VMSpec(cpus=3, memory_mib=3000))
    placed, _ = await store.place_vm(vm.id, source.id, expected_version=1, state=VMState.RUNNING)

    held, there = await store.hold_for_vm(
        vm.id, target.id, expected_version=placed.version, state=VMState.MIGRATING, task_id="t-1"
    )
    assert (held.host_id, held.state, held.task_id) == (source.id, VMState.MIGRATING, "t-1")
    assert (there.cpus_used, there.memory_mib_used) == (3, 3000)
    assert (await store.get(Host, source.id)).cpus_used == 3  # the VM's own claim stays

    back, there = await store.release_vm_hold(
        vm.id, target.id, expected_version=held.version, state=VMState.RUNNING, task_id=None
    )
    assert (back.host_id, back.state, back.task_id) == (source.id, VMState.RUNNING, None)
    assert (there.cpus_used, there.memory_mib_used) == (0, 0)
    assert await store.get(Host, target.id) == there
    with pytest.raises(VersionConflict):  # a second give-back of the same hold is refused
        await store.release_vm_hold(vm.id, target.id, expected_version=held.version)


async def test_a_hold_that_cannot_be_taken_changes_neither_vm_nor_host(
    store: Store, make: Factory
) -> None:
    dc = await make.datacenter()
    source = await make.host(dc, cpus=8, memory_mib=8192)
    small = await make.host(dc, cpus=2, memory_mib=8192)
    off = await make.host(dc, cpus=8, memory_mib=8192, admin_state=AdminState.MAINTENANCE)
    vm = await make.vm(await make.tenant(), dc, spec=VMSpec(cpus=3, memory_mib=1000))
    placed, _ = await store.place_vm(vm.id, source.id, expected_version=1, state=VMState.RUNNING)

    for host in (small, off):
        with pytest.raises(InsufficientCapacity):
            await store.hold_for_vm(
                vm.id, host.id, expected_version=placed.version, state=VMState.MIGRATING
            )
        assert await store.get(Host, host.id) == host
    with pytest.raises(Conflict, match="already"):
        await store.hold_for_vm(vm.id, source.id, expected_version=placed.version)
    with pytest.raises(VersionConflict):
        await store.hold_for_vm(vm.id, small.id, expected_version=placed.version + 5)
    assert await store.get(VM, vm.id) == placed
