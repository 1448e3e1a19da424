"""Volumes in the store: created with their quota and task in one transaction, changed with
their quota in one transaction, counted by the quota reconciliation; snapshots refer to them."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudcore.errors import AlreadyExists, InvalidRecord, QuotaExceeded, VersionConflict
from cloudcore.store.base import Store
from cloudcore.store.records import (
    Task,
    Volume,
    VolumeSnapshot,
    VolumeState,
    new_id,
)
from cloudcore.store.usage import volume_usage
from tests.contract.store.factory import Factory


def _volume(tenant_id: str, dc_id: str, size_gib: int = 10) -> tuple[Volume, Task]:
    volume = Volume(
        id=new_id("vol-"),
        tenant_id=tenant_id,
        datacenter_id=dc_id,
        name="data",
        size_gib=size_gib,
        pool_id="pool-a",
    )
    task = Task(
        id=new_id("task-"), tenant_id=tenant_id, kind="volume.create", subject=f"volume/{volume.id}"
    )
    return volume, task


async def _usage(store: Store, tenant_id: str) -> dict[str, int]:
    return {q.resource: q.used for q in await store.get_quotas(tenant_id)}


async def test_create_volume_takes_both_quotas_and_writes_volume_and_task(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "volumes", 3)
    await store.set_quota(tenant.id, "volume_gib", 100)
    volume, task = _volume(tenant.id, dc.id, 40)

    stored, stored_task = await store.create_volume(volume, task, volume_usage(40))

    assert stored.version == 1 and stored.pool_id == "pool-a" and stored.tier == "standard"
    assert await store.get(Volume, volume.id) == stored
    assert await store.get(Task, task.id) == stored_task
    assert await _usage(store, tenant.id) == {"volumes": 1, "volume_gib": 40}


async def test_a_volume_over_quota_names_the_resource_and_writes_nothing(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "volume_gib", 50)
    volume, task = _volume(tenant.id, dc.id, 51)

    with pytest.raises(QuotaExceeded, match="volume_gib"):
        await store.create_volume(volume, task, volume_usage(51))

    assert (await store.list(Volume, where={"tenant_id": tenant.id})).items == []
    assert (await store.list(Task, where={"tenant_id": tenant.id})).items == []
    assert await _usage(store, tenant.id) == {"volume_gib": 0}


async def test_a_failed_task_insert_leaves_no_volume(store: Store, make: Factory) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "volumes", 5)
    volume, task = _volume(tenant.id, dc.id)
    await make.task(id=task.id)

    with pytest.raises(AlreadyExists):
        await store.create_volume(volume, task, volume_usage(10))

    assert (await store.list(Volume, where={"tenant_id": tenant.id})).items == []
    assert await _usage(store, tenant.id) == {"volumes": 0}


async def test_an_unknown_datacenter_is_named(store: Store, make: Factory) -> None:
    tenant = await make.tenant()
    volume, task = _volume(tenant.id, "dc-nowhere")
    with pytest.raises(InvalidRecord, match="datacenter_id"):
        await store.create_volume(volume, task, volume_usage(10))


async def test_change_volume_moves_quota_with_the_record(store: Store, make: Factory) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "volume_gib", 30)
    volume, task = _volume(tenant.id, dc.id, 10)
    volume, _ = await store.create_volume(volume, task, volume_usage(10))

    with pytest.raises(QuotaExceeded, match="volume_gib"):
        await store.change_volume(
            volume.id, expected_version=1, consume={"volume_gib": 25}, size_gib=35
        )
    assert (await store.get(Volume, volume.id)).size_gib == 10  # nothing written

    grown = await store.change_volume(
        volume.id,
        expected_version=1,
        consume={"volume_gib": 20},
        size_gib=30,
        state=VolumeState.EXTENDING,
    )
    assert grown.size_gib == 30 and grown.version == 2
    assert await _usage(store, tenant.id) == {"volume_gib": 30}
    with pytest.raises(VersionConflict):
        await store.change_volume(volume.id, expected_version=1, state=VolumeState.AVAILABLE)

    await store.change_volume(
        volume.id, expected_version=2, give_back={"volume_gib": 30}, state=VolumeState.DELETED
    )
    assert await _usage(store, tenant.id) == {"volume_gib": 0}


async def test_reconciliation_counts_volumes_and_their_size(store: Store, make: Factory) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "volumes", 10)
    await store.set_quota(tenant.id, "volume_gib", 1000)
    for size in (5, 7):
        volume, task = _volume(tenant.id, dc.id, size)
        await store.create_volume(volume, task, {})  # usage not taken: drift

    drift = await store.reconcile_quotas(tenant.id)

    assert {(d.resource, d.recorded, d.actual) for d in drift} == {
        ("volumes", 0, 2),
        ("volume_gib", 0, 12),
    }
    assert await _usage(store, tenant.id) == {"volumes": 2, "volume_gib": 12}


async def test_a_snapshot_refers_to_its_volume(store: Store, make: Factory) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    volume, task = _volume(tenant.id, dc.id)
    await store.create_volume(volume, task, {})
    snap = await store.create(
        VolumeSnapshot(
            id=new_id("snap-"), tenant_id=tenant.id, volume_id=volume.id, name="s", size_gib=10
        )
    )
    assert (await store.list(VolumeSnapshot, where={"volume_id": volume.id})).items == [snap]
    with pytest.raises(InvalidRecord, match="volume_id"):
        await store.create(
            VolumeSnapshot(
                id=new_id("snap-"), tenant_id=tenant.id, volume_id="vol-none", name="s", size_gib=1
            )
        )


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.sampled_from(["create", "extend", "delete"]), st.integers(1, 40)),
        min_size=1,
        max_size=12,
    )
)
async def test_used_volume_gib_always_equals_the_sizes_of_live_volumes(
    store: Store, make: Factory, steps: list[tuple[str, int]]
) -> None:
    """Whatever creates, extends and deletes are asked (some over quota), the recorded usage is
    what the volumes not DELETED hold: reconciliation finds no drift."""
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "volumes", 4)
    await store.set_quota(tenant.id, "volume_gib", 100)
    live: list[Volume] = []
    for op, size in steps:
        try:
            if op == "create" or not live:
                volume, task = _volume(tenant.id, dc.id, size)
                created, _ = await store.create_volume(volume, task, volume_usage(size))
                live.append(created)
            elif op == "extend":
                v = live.pop(0)
                live.append(
                    await store.change_volume(
                        v.id,
                        expected_version=v.version,
                        consume={"volume_gib": size},
                        size_gib=v.size_gib + size,
                    )
                )
            else:
                v = live.pop(0)
                await store.change_volume(
                    v.id,
                    expected_version=v.version,
                    give_back=volume_usage(v.size_gib),
                    state=VolumeState.DELETED,
                )
        except QuotaExceeded:
            if op == "extend":
                live.append(await store.get(Volume, v.id))
    assert await store.reconcile_quotas(tenant.id, fix=False) == []
    used = await _usage(store, tenant.id)
    assert used == {"volumes": len(live), "volume_gib": sum(v.size_gib for v in live)}
