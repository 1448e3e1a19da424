"""Exports: what the driver promises about them, and (where the backend serves a real portal)
what the initiator's side sees: libiscsi's tools and QEMU's own initiator log in with the
connection the driver returned, and nobody else gets in."""

from __future__ import annotations

import pytest

from cloudcore.errors import Conflict, InvalidRequest, NotFound
from storage_drivers.base import Capability
from tests.contract.storage import initiator as iscsi
from tests.contract.storage.harness import INITIATOR, OTHER_INITIATOR, Harness, new_id

MIB = 1024 * 1024


async def test_an_export_names_the_target_and_its_chap_credentials(harness: Harness) -> None:
    volume = await harness.volume(size_mib=64)
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    assert conn.initiator == INITIATOR and conn.lun >= 0
    assert volume.volume_id in conn.target_iqn
    if harness.driver.supports(Capability.CHAP):
        assert conn.chap_username and conn.chap_secret and len(conn.chap_secret) >= 12
    assert (await harness.driver.get_volume(volume.volume_id)).exported_to == INITIATOR
    with pytest.raises(InvalidRequest, match="initiator"):
        await harness.driver.export_volume(volume.volume_id, "not an iqn")


async def test_an_export_opens_from_the_initiator_with_its_chap_credentials(
    harness: Harness,
) -> None:
    harness.require_initiator_side()
    volume = await harness.volume(size_mib=64)
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    inq = await iscsi.inquiry(conn)
    assert inq.ok and "DIRECT_ACCESS" in inq.out, inq.out
    assert await iscsi.capacity_bytes(conn) == 64 * MIB
    assert await iscsi.qemu_virtual_size(conn) == 64 * MIB


async def test_a_wrong_secret_or_another_initiator_is_refused(harness: Harness) -> None:
    harness.require_initiator_side()
    volume = await harness.volume()
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    assert (await iscsi.inquiry(conn)).ok
    other = await iscsi.inquiry(conn, initiator=OTHER_INITIATOR)
    assert not other.ok and "Login Failed" in other.out, other.out
    if harness.driver.supports(Capability.CHAP):
        wrong = await iscsi.inquiry(conn, secret="not-the-secret-1")
        assert not wrong.ok and "Authentication failure" in wrong.out, wrong.out


async def test_each_export_has_a_secret_of_its_own(harness: Harness) -> None:
    if not harness.driver.supports(Capability.CHAP):
        pytest.skip(f"{harness.driver.name} declares no CHAP")
    first, second = await harness.volume(), await harness.volume()
    conn1 = await harness.driver.export_volume(first.volume_id, INITIATOR)
    conn2 = await harness.driver.export_volume(second.volume_id, INITIATOR)
    assert conn1.chap_secret != conn2.chap_secret
    harness.require_initiator_side()
    assert not (await iscsi.inquiry(conn2, secret=conn1.chap_secret)).ok


async def test_export_is_idempotent_and_one_initiator_at_a_time(harness: Harness) -> None:
    volume = await harness.volume()
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    assert await harness.driver.export_volume(volume.volume_id, INITIATOR) == conn
    with pytest.raises(Conflict, match=INITIATOR):
        await harness.driver.export_volume(volume.volume_id, OTHER_INITIATOR)
    with pytest.raises(NotFound):
        await harness.driver.export_volume(new_id(), INITIATOR)
    assert (await harness.driver.get_volume(volume.volume_id)).exported_to == INITIATOR


async def test_unexport_is_idempotent_and_a_new_export_has_a_new_secret(harness: Harness) -> None:
    volume = await harness.volume()
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    await harness.driver.unexport_volume(volume.volume_id)
    await harness.driver.unexport_volume(volume.volume_id)
    await harness.driver.unexport_volume(new_id())
    assert (await harness.driver.get_volume(volume.volume_id)).exported_to is None
    again = await harness.driver.export_volume(volume.volume_id, OTHER_INITIATOR)
    assert again.initiator == OTHER_INITIATOR
    if harness.driver.supports(Capability.CHAP):
        assert again.chap_secret != conn.chap_secret


async def test_unexport_shuts_the_door_on_the_initiator(harness: Harness) -> None:
    harness.require_initiator_side()
    volume = await harness.volume()
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    assert (await iscsi.inquiry(conn)).ok
    await harness.driver.unexport_volume(volume.volume_id)
    assert not (await iscsi.inquiry(conn)).ok
    again = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    assert not (await iscsi.inquiry(again, secret=conn.chap_secret)).ok
    assert (await iscsi.inquiry(again)).ok


async def test_exports_outlive_a_backend_restart_and_a_new_driver(harness: Harness) -> None:
    volume = await harness.volume()
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    harness.restart_backend()
    await harness.driver.connect()
    # A driver made afresh (a restarted node) finds the export, with the same credentials.
    fresh = harness.make_driver()
    await fresh.connect()
    assert (await fresh.get_volume(volume.volume_id)).exported_to == INITIATOR
    assert await fresh.export_volume(volume.volume_id, INITIATOR) == conn
    await fresh.close()


async def test_exports_serve_again_after_the_backend_restarts(harness: Harness) -> None:
    harness.require_initiator_side()
    volume = await harness.volume()
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    harness.restart_backend()
    assert not (await iscsi.inquiry(conn)).ok  # the backend forgot it (else the test is moot)
    await harness.driver.connect()
    assert (await iscsi.inquiry(conn)).ok


async def test_the_chap_secret_is_never_logged(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    volume = await harness.volume()
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    await harness.driver.extend_volume(volume.volume_id, 128)
    harness.restart_backend()
    await harness.driver.connect()  # re-creates the target: the secret goes to the backend again
    await harness.driver.unexport_volume(volume.volume_id)
    assert conn.chap_secret is not None
    logged = capsys.readouterr()
    assert "volume.exported" in logged.err  # the log was captured
    assert conn.chap_secret not in logged.err + logged.out


async def test_a_second_initiator_is_admitted_while_a_vm_migrates(harness: Harness) -> None:
    """The target host's initiator let in beside the source's, then the source's dropped: the
    export the VM's next host opens, with the same credentials, and nobody else."""
    volume = await harness.volume()
    with pytest.raises(Conflict, match="not exported"):
        await harness.driver.export_also(volume.volume_id, OTHER_INITIATOR)
    conn = await harness.driver.export_volume(volume.volume_id, INITIATOR)
    also = await harness.driver.export_also(volume.volume_id, OTHER_INITIATOR)
    assert await harness.driver.export_also(volume.volume_id, OTHER_INITIATOR) == also
    assert also.initiator == OTHER_INITIATOR and also.target_iqn == conn.target_iqn
    assert also.chap_secret == conn.chap_secret
    with pytest.raises(Conflict, match=OTHER_INITIATOR):
        await harness.driver.export_also(volume.volume_id, "iqn.2026-01.test:third")
    if harness.no_initiator_side is None:
        assert (await iscsi.inquiry(conn)).ok
        assert (await iscsi.inquiry(conn, initiator=OTHER_INITIATOR)).ok

    await harness.driver.unexport_from(volume.volume_id, INITIATOR)  # the VM moved
    await harness.driver.unexport_from(volume.volume_id, INITIATOR)
    assert (await harness.driver.get_volume(volume.volume_id)).exported_to == OTHER_INITIATOR
    if harness.no_initiator_side is None:
        assert not (await iscsi.inquiry(conn)).ok
        assert (await iscsi.inquiry(conn, initiator=OTHER_INITIATOR)).ok
    await harness.driver.unexport_from(volume.volume_id, OTHER_INITIATOR)  # the last one
    assert (await harness.driver.get_volume(volume.volume_id)).exported_to is None
