"""Generic records: create, get, compare-and-set update, delete; bad input leaves nothing behind."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cloudcore.errors import AlreadyExists, Conflict, InvalidRecord, NotFound, VersionConflict
from cloudcore.store.base import Store
from cloudcore.store.records import (
    VM,
    Host,
    Network,
    PowerState,
    Task,
    Tenant,
    User,
    VMSpec,
    VMState,
    new_id,
)
from tests.contract.store.factory import Factory


async def test_a_created_record_reads_back_equal_at_version_1(store: Store, make: Factory) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    vm = await make.vm(tenant, dc, spec=VMSpec(cpus=4, memory_mib=4096, network_ids=("n1",)))

    assert vm.version == 1
    assert vm.created_at == vm.updated_at
    assert vm.created_at.year >= 2024
    assert await store.get(VM, vm.id) == vm


async def test_get_of_an_unknown_id_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="nope"):
        await store.get(VM, "nope")


async def test_a_duplicate_id_or_unique_name_raises_already_exists(
    store: Store, make: Factory
) -> None:
    tenant = await make.tenant(name="acme")
    with pytest.raises(AlreadyExists):
        await store.create(Tenant(id=tenant.id, name="other"))
    with pytest.raises(AlreadyExists):
        await store.create(Tenant(id=new_id(), name="acme"))


async def test_an_invalid_field_is_refused_by_name_and_nothing_is_stored(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    vm_id = new_id()
    bad = VM(
        id=vm_id, tenant_id=tenant.id, datacenter_id=dc.id, name="x",
        spec=VMSpec(cpus=0, memory_mib=1024),
    )  # fmt: skip
    with pytest.raises(InvalidRecord, match=r"spec\.cpus"):
        await store.create(bad)
    with pytest.raises(NotFound):
        await store.get(VM, vm_id)


async def test_a_reference_to_a_missing_record_is_refused(store: Store, make: Factory) -> None:
    tenant = await make.tenant()
    vm = VM(
        id=new_id(), tenant_id=tenant.id, datacenter_id="no-such-dc", name="x",
        spec=VMSpec(cpus=1, memory_mib=512),
    )  # fmt: skip
    with pytest.raises(InvalidRecord):
        await store.create(vm)
    assert (await store.list(VM)).items == []


async def test_update_with_the_expected_version_applies_and_bumps_the_version(
    store: Store, make: Factory
) -> None:
    vm = await make.vm(await make.tenant(), await make.datacenter())

    updated = await store.update(
        VM, vm.id, expected_version=1, state=VMState.RUNNING, power=PowerState.ON
    )

    assert (updated.version, updated.state, updated.power) == (2, "RUNNING", "ON")
    assert updated.updated_at > vm.updated_at
    assert updated.created_at == vm.created_at
    assert await store.get(VM, vm.id) == updated


async def test_update_with_a_stale_version_raises_version_conflict_and_changes_nothing(
    store: Store, make: Factory
) -> None:
    vm = await make.vm(await make.tenant(), await make.datacenter())
    await store.update(VM, vm.id, expected_version=1, state=VMState.SCHEDULING)

    with pytest.raises(VersionConflict, match="version 2, not 1"):
        await store.update(VM, vm.id, expected_version=1, state=VMState.ERROR)

    stored = await store.get(VM, vm.id)
    assert (stored.version, stored.state) == (2, VMState.SCHEDULING)


async def test_update_of_an_unknown_id_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.update(VM, "nope", expected_version=1, state=VMState.RUNNING)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"version": 7}, "version"),
        ({"state": "FLYING"}, "state"),
        ({"spec": {"cpus": -1, "memory_mib": 1}}, r"spec\.cpus"),
        ({"name": ""}, "name"),
    ],
)
async def test_update_refuses_bad_changes_by_field_name(
    store: Store, make: Factory, changes: dict[str, object], field: str
) -> None:
    vm = await make.vm(await make.tenant(), await make.datacenter())
    with pytest.raises(InvalidRecord, match=field):
        await store.update(VM, vm.id, expected_version=1, **changes)
    assert await store.get(VM, vm.id) == vm


async def test_of_concurrent_updates_at_one_version_exactly_one_wins(
    store: Store, make: Factory
) -> None:
    vm = await make.vm(await make.tenant(), await make.datacenter())

    results = await asyncio.gather(
        *(store.update(VM, vm.id, expected_version=1, fault=f"w{i}") for i in range(20)),
        return_exceptions=True,
    )

    winners = [r for r in results if isinstance(r, VM)]
    assert len(winners) == 1
    assert all(isinstance(r, VersionConflict) for r in results if r not in winners)
    assert await store.get(VM, vm.id) == winners[0]


async def test_read_modify_write_with_retries_loses_no_update(store: Store, make: Factory) -> None:
    task = await make.task(data={"n": 0})

    async def increment() -> None:
        while True:
            current = await store.get(Task, task.id)
            try:
                await store.update(
                    Task, task.id, expected_version=current.version,
                    data={"n": current.data["n"] + 1},
                )  # fmt: skip
                return
            except VersionConflict:
                continue

    await asyncio.gather(*(increment() for _ in range(30)))

    final = await store.get(Task, task.id)
    assert final.data == {"n": 30}
    assert final.version == 31


async def test_delete_honours_the_expected_version(store: Store, make: Factory) -> None:
    vm = await make.vm(await make.tenant(), await make.datacenter())

    with pytest.raises(VersionConflict):
        await store.delete(VM, vm.id, expected_version=5)
    await store.delete(VM, vm.id, expected_version=1)

    with pytest.raises(NotFound):
        await store.get(VM, vm.id)
    with pytest.raises(NotFound):
        await store.delete(VM, vm.id)


async def test_deleting_a_record_others_refer_to_raises_conflict(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    await make.vm(tenant, dc)

    with pytest.raises(Conflict, match="referenced"):
        await store.delete(Tenant, tenant.id)
    assert await store.get(Tenant, tenant.id) == tenant


async def test_times_round_trip_as_the_same_instant_and_naive_times_are_refused(
    store: Store, make: Factory
) -> None:
    vm = await make.vm(await make.tenant(), await make.datacenter())
    seen = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))

    updated = await store.update(VM, vm.id, expected_version=1, observed_at=seen)
    with pytest.raises(InvalidRecord, match="observed_at"):
        await store.update(VM, vm.id, expected_version=2, observed_at=datetime(2026, 1, 2))

    assert updated.observed_at == seen
    assert (await store.get(VM, vm.id)).observed_at == seen


async def test_concurrent_updates_of_many_records_each_keep_their_own_outcome(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    host = await make.host(dc)
    vms = [await make.vm(tenant, dc) for _ in range(6)]

    results = await asyncio.gather(
        *(
            store.update(VM, vm.id, expected_version=1, host_id=host.id, fault=f"f{i}")
            for i, vm in enumerate(vms[:4])
        ),
        store.update(VM, vms[4].id, expected_version=1, host_id="no-such-host", fault="bad"),
        store.update(VM, vms[5].id, expected_version=9, host_id=host.id, fault="stale"),
        return_exceptions=True,
    )

    assert [r.fault for r in results[:4]] == ["f0", "f1", "f2", "f3"]  # type: ignore[union-attr]
    assert isinstance(results[4], InvalidRecord)
    assert isinstance(results[5], VersionConflict)
    assert (await store.get(VM, vms[4].id)) == vms[4]
    assert (await store.get(VM, vms[5].id)) == vms[5]
    for vm in vms[:4]:
        assert (await store.get(VM, vm.id)).host_id == host.id


async def test_every_kind_of_field_survives_an_update(store: Store, make: Factory) -> None:
    tenant = await make.tenant()
    user = await store.create(User(id=new_id(), tenant_id=tenant.id, name="ann"))
    host = await make.host(await make.datacenter())

    disabled = await store.update(User, user.id, expected_version=1, disabled=True)
    tagged = await store.update(Host, host.id, expected_version=1, capabilities={"gpu": "a100"})
    network = await make.network(await make.datacenter())
    tagged_net = await store.update(Network, network.id, expected_version=1, vlan=42)

    assert (await store.get(User, user.id)) == disabled
    assert disabled.disabled is True
    assert (await store.get(Host, host.id)).capabilities == {"gpu": "a100"} == tagged.capabilities
    assert (await store.get(Network, network.id)).vlan == 42 == tagged_net.vlan


async def test_concurrent_updates_of_structured_and_time_fields_all_land(
    store: Store, make: Factory
) -> None:
    dc = await make.datacenter()
    hosts = [await make.host(dc) for _ in range(5)]
    seen = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)

    updated = await asyncio.gather(
        *(
            store.update(
                Host, host.id, expected_version=1, capabilities={"n": str(i)}, observed_at=seen
            )
            for i, host in enumerate(hosts)
        )
    )

    for i, host in enumerate(hosts):
        stored = await store.get(Host, host.id)
        assert stored == updated[i]
        assert (stored.capabilities, stored.observed_at, stored.version) == ({"n": str(i)}, seen, 2)
