"""Exports, checked from the initiator's side: libiscsi's tools and QEMU's own initiator log in
with the connection the driver returned, and nobody else gets in."""

from __future__ import annotations

import pytest

from cloudcore.errors import Conflict, NotFound
from storage_drivers.base import Capability
from tests.contract.storage import initiator as iscsi
from tests.contract.storage.harness import INITIATOR, OTHER_INITIATOR, Harness, new_id

MIB = 1024 * 1024


async def test_an_export_opens_from_the_initiator_with_its_chap_credentials(
    harness: Harness,
) -> None:
    volume = await harness.volume(size_mib=64)
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    assert conn.initiator == INITIATOR and conn.lun >= 0
    assert volume.volume_id in conn.target_iqn
    if harness.driver.supports(Capability.CHAP):
        assert conn.chap_username and conn.chap_secret and len(conn.chap_secret) >= 12
    inq = await iscsi.inquiry(conn)
    assert inq.ok and "DIRECT_ACCESS" in inq.out, inq.out
    assert await iscsi.capacity_bytes(conn) == 64 * MIB
    assert await iscsi.qemu_virtual_size(conn) == 64 * MIB
    assert (await harness.driver.get_volume(volume.volume_id)).exported_to == INITIATOR


async def test_a_wrong_secret_or_another_initiator_is_refused(harness: Harness) -> None:
    volume = await harness.volume()
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    assert (await iscsi.inquiry(conn)).ok
    other = await iscsi.inquiry(conn, initiator=OTHER_INITIATOR)
    assert not other.ok and "Login Failed" in other.out, other.out
    if harness.driver.supports(Capability.CHAP):
        wrong = await iscsi.inquiry(conn, secret="not-the-secret-1")
        assert not wrong.ok and "Authentication failure" in wrong.out, wrong.out


async def test_one_volumes_credentials_do_not_open_another(harness: Harness) -> None:
    if not harness.driver.supports(Capability.CHAP):
        pytest.skip(f"{harness.driver.name} declares no CHAP")
    first, second = await harness.volume(), await harness.volume()
    conn1 = await harness.driver.export_volume(first.volume_id, INITIATOR)
    conn2 = await harness.driver.export_volume(second.volume_id, INITIATOR)
    assert conn1.chap_secret != conn2.chap_secret
    assert not (await iscsi.inquiry(conn2, secret=conn1.chap_secret)).ok


async def test_export_is_idempotent_and_one_initiator_at_a_time(harness: Harness) -> None:
    volume = await harness.volume()
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    assert await harness.driver.export_volume(volume.volume_id, INITIATOR) == conn
    with pytest.raises(Conflict, match=INITIATOR):
        await harness.driver.export_volume(volume.volume_id, OTHER_INITIATOR)
    with pytest.raises(NotFound):
        await harness.driver.export_volume(new_id(), INITIATOR)
    assert (await iscsi.inquiry(conn)).ok


async def test_unexport_shuts_the_door_and_is_idempotent(harness: Harness) -> None:
    volume = await harness.volume()
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    await harness.driver.unexport_volume(volume.volume_id)
    await harness.driver.unexport_volume(volume.volume_id)
    await harness.driver.unexport_volume(new_id())
    assert not (await iscsi.inquiry(conn)).ok
    assert (await harness.driver.get_volume(volume.volume_id)).exported_to is None
    # A new export is a new secret: the old one does not open it.
    again = await harness.driver.export_volume(volume.volume_id, OTHER_INITIATOR)
    if harness.driver.supports(Capability.CHAP):
        assert again.chap_secret != conn.chap_secret
        assert not (await iscsi.inquiry(again, secret=conn.chap_secret)).ok
    assert (await iscsi.inquiry(again)).ok


async def test_exports_come_back_after_the_backend_restarts(harness: Harness) -> None:
    volume = await harness.volume()
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    harness.restart_backend()
    await harness.driver.connect()
    assert (await iscsi.inquiry(conn)).ok
    # A driver made afresh (a restarted node) finds them too, with the same credentials.
    fresh = harness.make_driver()
    await fresh.connect()
    assert await fresh.export_volume(volume.volume_id, INITIATOR) == conn
    await fresh.close()
