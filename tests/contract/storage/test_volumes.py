"""Volumes, snapshots, clones, capacity and listing: what every storage driver does alike."""

from __future__ import annotations

import asyncio

import pytest

from cloudcore.errors import (
    AlreadyExists,
    BackendUnavailable,
    IllegalTransition,
    InvalidRequest,
    NotFound,
)
from storage_drivers.base import Capability, VolumeSpec
from tests.contract.storage.harness import INITIATOR, Harness, new_id


async def test_create_is_idempotent_and_refuses_a_different_size(harness: Harness) -> None:
    spec = VolumeSpec(volume_id=new_id(), size_mib=64)
    first = await harness.driver.create_volume(spec)
    assert (first.volume_id, first.size_mib, first.exported_to) == (spec.volume_id, 64, None)
    assert await harness.driver.create_volume(spec) == first
    with pytest.raises(AlreadyExists, match="64"):
        await harness.driver.create_volume(VolumeSpec(volume_id=spec.volume_id, size_mib=128))
    assert await harness.driver.get_volume(spec.volume_id) == first


async def test_a_thin_volume_takes_no_space_until_written(harness: Harness) -> None:
    if not harness.driver.supports(Capability.THIN):
        pytest.skip(f"{harness.driver.name} declares no thin volumes")
    volume = await harness.volume(size_mib=1024)
    assert volume.size_mib == 1024 and volume.allocated_mib < 2


async def test_delete_is_idempotent_and_the_volume_is_gone(harness: Harness) -> None:
    volume = await harness.volume()
    await harness.driver.delete_volume(volume.volume_id)
    await harness.driver.delete_volume(volume.volume_id)
    with pytest.raises(NotFound, match=volume.volume_id):
        await harness.driver.get_volume(volume.volume_id)
    assert volume.volume_id not in [v.volume_id for v in await harness.driver.list_volumes()]


async def test_an_exported_volume_is_not_deleted(harness: Harness) -> None:
    volume = await harness.volume()
    await harness.driver.export_volume(volume.volume_id, INITIATOR)
    with pytest.raises(IllegalTransition, match="unexport"):
        await harness.driver.delete_volume(volume.volume_id)
    await harness.driver.unexport_volume(volume.volume_id)
    await harness.driver.delete_volume(volume.volume_id)


async def test_extend_grows_refuses_to_shrink_and_is_a_no_op_at_the_same_size(
    harness: Harness,
) -> None:
    volume = await harness.volume(size_mib=64)
    grown = await harness.driver.extend_volume(volume.volume_id, 96)
    assert grown.size_mib == 96
    assert (await harness.driver.extend_volume(volume.volume_id, 96)).size_mib == 96
    with pytest.raises(InvalidRequest, match="shrink"):
        await harness.driver.extend_volume(volume.volume_id, 32)
    with pytest.raises(NotFound):
        await harness.driver.extend_volume(new_id(), 128)


async def test_snapshots_are_idempotent_listed_and_deleted(harness: Harness) -> None:
    volume = await harness.volume(size_mib=32)
    snap_id = new_id("s")
    snap = await harness.driver.create_snapshot(volume.volume_id, snap_id)
    assert (snap.snapshot_id, snap.volume_id, snap.size_mib) == (snap_id, volume.volume_id, 32)
    assert await harness.driver.create_snapshot(volume.volume_id, snap_id) == snap
    other = await harness.volume()
    with pytest.raises(AlreadyExists, match=volume.volume_id):
        await harness.driver.create_snapshot(other.volume_id, snap_id)
    assert [s.snapshot_id for s in await harness.driver.list_snapshots()] == [snap_id]
    with pytest.raises(NotFound):
        await harness.driver.create_snapshot(new_id(), new_id("s"))
    await harness.driver.delete_snapshot(snap_id)
    await harness.driver.delete_snapshot(snap_id)
    assert await harness.driver.list_snapshots() == []


async def test_a_volume_from_a_snapshot_is_at_least_the_snapshots_size(harness: Harness) -> None:
    volume = await harness.volume(size_mib=32)
    snap_id = new_id("s")
    await harness.driver.create_snapshot(volume.volume_id, snap_id)
    spec = VolumeSpec(volume_id=new_id(), size_mib=48)
    restored = await harness.driver.create_volume_from_snapshot(snap_id, spec)
    assert restored.size_mib == 48
    assert await harness.driver.create_volume_from_snapshot(snap_id, spec) == restored
    with pytest.raises(InvalidRequest, match="smaller"):
        await harness.driver.create_volume_from_snapshot(
            snap_id, VolumeSpec(volume_id=new_id(), size_mib=16)
        )
    with pytest.raises(NotFound):
        await harness.driver.create_volume_from_snapshot(new_id("s"), spec)
    # The snapshot is independent of its volume, and the new volume of the snapshot.
    await harness.driver.delete_volume(volume.volume_id)
    await harness.driver.delete_snapshot(snap_id)
    assert (await harness.driver.get_volume(spec.volume_id)).size_mib == 48


async def test_a_clone_copies_a_volume_at_its_size_or_larger(harness: Harness) -> None:
    source = await harness.volume(size_mib=32)
    clone = await harness.driver.clone_volume(
        source.volume_id, VolumeSpec(volume_id=new_id(), size_mib=32)
    )
    assert clone.size_mib == 32 and clone.volume_id != source.volume_id
    with pytest.raises(InvalidRequest, match="smaller"):
        await harness.driver.clone_volume(
            source.volume_id, VolumeSpec(volume_id=new_id(), size_mib=16)
        )
    with pytest.raises(NotFound):
        await harness.driver.clone_volume(new_id(), VolumeSpec(volume_id=new_id(), size_mib=64))


async def test_capacity_counts_what_is_provisioned(harness: Harness) -> None:
    before = await harness.driver.capacity()
    assert before.total_mib > 0 and 0 <= before.used_mib <= before.total_mib
    volume = await harness.volume(size_mib=200)
    await harness.driver.create_snapshot(volume.volume_id, new_id("s"))
    after = await harness.driver.capacity()
    assert after.provisioned_mib == before.provisioned_mib + 400


async def test_the_listing_shows_every_volume_sorted_with_its_export(harness: Harness) -> None:
    volumes = [await harness.volume(size_mib=8 * n) for n in (1, 2, 3)]
    await harness.driver.export_volume(volumes[1].volume_id, INITIATOR)
    listed = await harness.driver.list_volumes()
    assert [v.volume_id for v in listed] == sorted(v.volume_id for v in volumes)
    by_id = {v.volume_id: v for v in listed}
    assert [by_id[v.volume_id].size_mib for v in volumes] == [8, 16, 24]
    assert [by_id[v.volume_id].exported_to for v in volumes] == [None, INITIATOR, None]


@pytest.mark.parametrize("bad", ["", "UPPER", "../x", "a b"])
async def test_ids_that_cannot_be_names_are_refused(harness: Harness, bad: str) -> None:
    with pytest.raises(InvalidRequest):
        await harness.driver.get_volume(bad)
    with pytest.raises(InvalidRequest):
        await harness.driver.delete_volume(bad)


async def test_a_driver_not_connected_or_closed_refuses_every_call(harness: Harness) -> None:
    fresh = harness.make_driver()
    with pytest.raises(BackendUnavailable, match="not connected"):
        await fresh.list_volumes()
    await fresh.connect()
    await fresh.close()
    await fresh.close()
    with pytest.raises(BackendUnavailable):
        await fresh.get_volume(new_id())
    with pytest.raises(BackendUnavailable, match="closed"):
        await fresh.connect()


async def test_concurrent_calls_on_the_same_volumes_agree(harness: Harness) -> None:
    spec = VolumeSpec(volume_id=new_id(), size_mib=16)
    made = await asyncio.gather(*(harness.driver.create_volume(spec) for _ in range(5)))
    assert all(m == made[0] for m in made)
    other = await harness.volume(size_mib=16)
    # Clones in opposite directions at once (each target exists already): no deadlock.
    a, b = spec.volume_id, other.volume_id
    async with asyncio.timeout(20):
        await asyncio.gather(
            harness.driver.clone_volume(a, VolumeSpec(volume_id=b, size_mib=16)),
            harness.driver.clone_volume(b, VolumeSpec(volume_id=a, size_mib=16)),
        )
    assert len(await harness.driver.list_volumes()) == 2
