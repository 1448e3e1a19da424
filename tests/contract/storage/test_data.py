"""Data for real: patterns written through QEMU's iSCSI initiator survive an extend and are in
snapshots, volumes made from snapshots, and clones."""

from __future__ import annotations

import pytest

from storage_drivers.base import Capability, Connection, VolumeSpec
from tests.contract.storage import initiator as iscsi
from tests.contract.storage.harness import INITIATOR, Harness, new_id
from tests.waiting import eventually

MIB = 1024 * 1024
HEAD, TAIL = 0xAB, 0xCD


async def _write_both_ends(conn: Connection, size_mib: int) -> None:
    await iscsi.write_pattern(conn, HEAD, 0, MIB)
    await iscsi.write_pattern(conn, TAIL, (size_mib - 1) * MIB, MIB)


async def _has_both_ends(conn: Connection, size_mib: int) -> bool:
    return await iscsi.has_pattern(conn, HEAD, 0, MIB) and await iscsi.has_pattern(
        conn, TAIL, (size_mib - 1) * MIB, MIB
    )


async def test_data_survives_an_extend_of_an_exported_volume(harness: Harness) -> None:
    harness.require_initiator_side()
    volume = await harness.volume(size_mib=32)
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    await _write_both_ends(conn, 32)
    assert not await iscsi.has_pattern(conn, TAIL, 0, MIB)  # the check can fail
    if not harness.driver.supports(Capability.ONLINE_EXTEND):
        await harness.driver.unexport_volume(volume.volume_id)
    await harness.driver.extend_volume(volume.volume_id, 64)
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    assert await iscsi.capacity_bytes(conn) == 64 * MIB
    assert await iscsi.qemu_virtual_size(conn) == 64 * MIB
    assert await _has_both_ends(conn, 32)
    assert await iscsi.has_pattern(conn, 0, 63 * MIB, MIB)  # the new space reads as zeros


async def test_snapshot_volume_from_snapshot_and_clone_carry_the_data(harness: Harness) -> None:
    harness.require_initiator_side()
    volume = await harness.volume(size_mib=16)
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    await _write_both_ends(conn, 16)
    snap_id = new_id("s")
    await harness.driver.create_snapshot(volume.volume_id, snap_id)
    clone = await harness.driver.clone_volume(
        volume.volume_id, VolumeSpec(volume_id=new_id(), size_mib=16)
    )
    # Later writes to the source reach neither the snapshot nor the clone.
    await iscsi.write_pattern(conn, 0x11, 0, MIB)
    restored = await harness.driver.create_volume_from_snapshot(
        snap_id, VolumeSpec(volume_id=new_id(), size_mib=24)
    )
    for copy, size in ((restored, 24), (clone, 16)):
        copy_conn = await harness.driver.export_volume(copy.volume_id, INITIATOR)
        assert await iscsi.capacity_bytes(copy_conn) == size * MIB
        assert await _has_both_ends(copy_conn, 16), copy.volume_id
    assert await iscsi.has_pattern(conn, 0x11, 0, MIB)


async def test_an_extend_with_a_session_open_keeps_the_session_and_the_data(
    harness: Harness,
) -> None:
    harness.require_initiator_side()
    if not harness.driver.supports(Capability.ONLINE_EXTEND):
        pytest.skip(f"{harness.driver.name} declares no online extend")
    volume = await harness.volume(size_mib=16)
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    await _write_both_ends(conn, 16)
    session = await iscsi.OpenSession.open(conn)
    try:

        async def logged_in() -> bool:
            return (await harness.driver.get_volume(volume.volume_id)).sessions == 1

        await eventually(logged_in, timeout=10)
        grown = await harness.driver.extend_volume(volume.volume_id, 48)
        assert (grown.size_mib, grown.sessions, grown.exported_to) == (48, 1, INITIATOR)
    finally:
        await session.close()
    assert await iscsi.capacity_bytes(conn) == 48 * MIB
    assert await _has_both_ends(conn, 16)
