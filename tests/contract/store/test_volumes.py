"""Volumes in the store: created with their quota and task in one transaction, changed with
their quota and the task they begin or end in one transaction, counted by the quota
reconciliation; snapshots refer to them."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudcore.errors import (
    AlreadyExists,
    InvalidRecord,
    NotFound,
    QuotaExceeded,
    VersionConflict,
)
from cloudcore.store.base import Store
from cloudcore.store.records import (
    Task,
    TaskState,
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


async def test_a_volume_change_moves_quota_with_the_record(store: Store, make: Factory) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "volume_gib", 30)
    volume, task = _volume(tenant.id, dc.id, 10)
    volume, _ = await store.create_volume(volume, task, volume_usage(10))

    async def change(version: int, delta: dict[str, int], **changes: object) -> Volume:
        return await store.update_charged(
            Volume,
            volume.id,
            expected_version=version,
            tenant_id=tenant.id,
            delta=delta,
            **changes,
        )

    with pytest.raises(QuotaExceeded, match="volume_gib"):
        await change(1, {"volume_gib": 25}, size_gib=35)
    assert (await store.get(Volume, volume.id)).size_gib == 10  # nothing written

    grown = await change(1, {"volume_gib": 20}, size_gib=30, state=VolumeState.EXTENDING)
    assert grown.size_gib == 30 and grown.version == 2
    assert await _usage(store, tenant.id) == {"volume_gib": 30}
    with pytest.raises(VersionConflict):
        await change(1, {}, state=VolumeState.AVAILABLE)

    await change(2, {"volume_gib": -30}, state=VolumeState.DELETED)
    assert await _usage(store, tenant.id) == {"volume_gib": 0}


async def test_a_change_writes_the_task_it_begins_or_nothing(store: Store, make: Factory) -> None:
    """The task an operation begins is written with the volume's change: a refused change
    (quota, version) leaves no task, so none can be left RUNNING beside a volume at rest."""
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "volume_gib", 15)
    volume, task = _volume(tenant.id, dc.id, 10)
    volume, _ = await store.create_volume(volume, task, volume_usage(10))
    extend = Task(
        id=new_id("task-"),
        tenant_id=tenant.id,
        kind="volume.extend",
        subject=f"volume/{volume.id}",
        state=TaskState.RUNNING,
    )

    with pytest.raises(QuotaExceeded, match="volume_gib"):
        await store.update_charged(
            Volume,
            volume.id,
            expected_version=1,
            tenant_id=tenant.id,
            delta={"volume_gib": 10},
            create=[extend],
            state=VolumeState.EXTENDING,
            task_id=extend.id,
        )
    with pytest.raises(NotFound):
        await store.get(Task, extend.id)

    begun = await store.update_charged(
        Volume,
        volume.id,
        expected_version=1,
        tenant_id=tenant.id,
        delta={"volume_gib": 5},
        create=[extend],
        state=VolumeState.EXTENDING,
        task_id=extend.id,
        size_gib=15,
    )
    stored = await store.get(Task, extend.id)
    assert (stored.state, stored.version, stored.created_at) == (
        TaskState.RUNNING,
        1,
        begun.updated_at,
    )
    assert begun.task_id == extend.id


async def test_a_change_ends_its_task_in_the_same_transaction(store: Store, make: Factory) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    volume, task = _volume(tenant.id, dc.id, 10)
    volume, task = await store.create_volume(
        msgspec.structs.replace(volume, task_id=task.id), task, {}
    )
    ended = msgspec.structs.replace(task, state=TaskState.SUCCEEDED)

    with pytest.raises(VersionConflict, match="Task"):  # the task moved on: nothing written
        await store.update_charged(
            Volume,
            volume.id,
            expected_version=1,
            tenant_id=None,
            delta={},
            end_task=msgspec.structs.replace(ended, version=7),
            state=VolumeState.AVAILABLE,
            task_id=None,
        )
    assert (await store.get(Volume, volume.id)).state is VolumeState.CREATING

    settled = await store.update_charged(
        Volume,
        volume.id,
        expected_version=1,
        tenant_id=None,
        delta={},
        end_task=ended,
        state=VolumeState.AVAILABLE,
        task_id=None,
    )
    stored = await store.get(Task, task.id)
    assert (settled.state, settled.task_id) == (VolumeState.AVAILABLE, None)
    assert (stored.state, stored.version, stored.updated_at) == (
        TaskState.SUCCEEDED,
        2,
        settled.updated_at,
    )


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
                    await store.update_charged(
                        Volume,
                        v.id,
                        expected_version=v.version,
                        tenant_id=tenant.id,
                        delta={"volume_gib": size},
                        size_gib=v.size_gib + size,
                    )
                )
            else:
                v = live.pop(0)
                await store.update_charged(
                    Volume,
                    v.id,
                    expected_version=v.version,
                    tenant_id=tenant.id,
                    delta={r: -n for r, n in volume_usage(v.size_gib).items()},
                    state=VolumeState.DELETED,
                )
        except QuotaExceeded:
            if op == "extend":
                live.append(await store.get(Volume, v.id))
    assert await store.reconcile_quotas(tenant.id, fix=False) == []
    used = await _usage(store, tenant.id)
    assert used == {"volumes": len(live), "volume_gib": sum(v.size_gib for v in live)}
