"""A volume on a private tgtd attached to a real QEMU guest under libvirtd, through the storage
actors: hot attach (QEMU's own iSCSI initiator, CHAP from a libvirt secret, the initiator name
the export allows), the disk seen in the domain and by QEMU, grown while attached (the guest
sees the new size), tgtd restarted under it (the pool
actor re-creates the target), hot detach; and a volume attached to a stopped VM that then
starts with it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from actors.volume_messages import AttachParams, DeleteVolumeParams, DetachParams, ExtendParams
from cloudcore.store.records import VM, Task, TaskState, VMSpec, Volume, VolumeState
from tests.cloud import Cloud
from tests.contract.storage.tgtd import Tgtd
from tests.integration.libvirt.conftest import virsh
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(180)


async def _deploy(cloud: Cloud, start: bool = True) -> VM:
    task = await cloud.orchestrator.deploy(
        tenant_id="t1",
        datacenter_id="dc1",
        name="iscsi-guest",
        spec=VMSpec(cpus=1, memory_mib=64),
        start=start,
    )
    assert (await cloud.wait(task, timeout=90)).error is None
    return await cloud.store.get(VM, task.subject.removeprefix("vm/"))


async def _run(cloud: Cloud, task: Task) -> Task:
    assert cloud.orchestrator.storage is not None
    done = await cloud.orchestrator.storage.wait(task.id, 90)
    assert done.state is TaskState.SUCCEEDED, done.error
    return done


async def _volume(cloud: Cloud) -> Volume:
    storage = cloud.orchestrator.storage
    assert storage is not None
    task = await storage.create_volume(tenant_id="t1", datacenter_id="dc1", name="data", size_gib=1)
    await _run(cloud, task)
    return await cloud.store.get(Volume, task.subject.removeprefix("volume/"))


def _targets(tgtd: Tgtd) -> str:
    return subprocess.run(
        ["tgtadm", "-C", str(tgtd.control_port), "--lld", "iscsi", "--op", "show",
         "--mode", "target"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip


def _info_block(name: str) -> str:
    return virsh("qemu-monitor-command", "--hmp", name, "info block").stdout


def _secret_of(tmp_path: Path, volume_id: str) -> str:
    record = json.loads((tmp_path / "pool" / "exports" / f"{volume_id}.json").read_text())
    return str(record["chap_secret"])


async def test_hot_attach_survives_a_tgtd_restart_and_hot_detaches(
    iscsi_cloud: Cloud, tgtd: Tgtd, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cloud, storage = iscsi_cloud, iscsi_cloud.orchestrator.storage
    assert storage is not None
    vm = await _deploy(cloud)
    volume = await _volume(cloud)
    name = f"cc-{vm.id}"

    await _run(cloud, await storage.operate(volume.id, AttachParams(vm_id=vm.id)))

    volume = await cloud.store.get(Volume, volume.id)
    assert (volume.state, volume.device) == (VolumeState.ATTACHED, "sda")
    xml = virsh("dumpxml", name).stdout
    assert "protocol='iscsi'" in xml and volume.target is not None and volume.target in xml
    assert f"iqn.2026-12.org.cloudcore.host:{vm.host_id}" in xml  # the initiator the ACL allows
    secret = _secret_of(tmp_path, volume.id)
    assert secret not in xml  # CHAP only through the libvirt secret
    assert "iscsi" in _info_block(name) and volume.target in _info_block(name)
    assert f"iqn.2026-12.org.cloudcore.host:{vm.host_id}" in _targets(tgtd)

    await _run(cloud, await storage.operate(volume.id, ExtendParams(size_gib=2)))
    extended = await cloud.store.get(Volume, volume.id)
    assert (extended.size_gib, extended.fault) == (2, None)
    assert "Capacity:       2147483648" in virsh("domblkinfo", name, "sda").stdout  # the guest

    tgtd.restart()  # forgets every target, with QEMU's session open on one
    assert volume.target not in _targets(tgtd)

    def served_again() -> bool:  # the target, its LUN, its CHAP account and its ACL
        shown = _targets(tgtd)
        return all(
            part in shown
            for part in (
                str(volume.target),
                f"{volume.id}.img",
                f"cc-{volume.id}",
                f"iqn.2026-12.org.cloudcore.host:{vm.host_id}",
            )
        )

    await eventually(served_again, timeout=15)
    assert await storage.reconcile() == []

    await _run(cloud, await storage.operate(volume.id, DetachParams()))
    volume = await cloud.store.get(Volume, volume.id)
    assert (volume.state, volume.vm_id, volume.device) == (VolumeState.AVAILABLE, None, None)
    assert "protocol='iscsi'" not in virsh("dumpxml", name).stdout
    assert "iscsi" not in _info_block(name)
    assert volume.id not in _targets(tgtd)
    await _run(cloud, await storage.operate(volume.id, DeleteVolumeParams()))
    assert not (tmp_path / "pool" / "volumes" / f"{volume.id}.img").exists()
    logged = capfd.readouterr()
    assert secret not in logged.out + logged.err  # never in a log line
    assert "volume.exported" in logged.err or "volume.exported" in logged.out  # logs were seen


async def test_a_volume_attached_to_a_stopped_vm_is_there_when_it_starts(
    iscsi_cloud: Cloud, tgtd: Tgtd
) -> None:
    from actors.lifecycle import Operation

    cloud, storage = iscsi_cloud, iscsi_cloud.orchestrator.storage
    assert storage is not None
    vm = await _deploy(cloud, start=False)
    volume = await _volume(cloud)
    await _run(cloud, await storage.operate(volume.id, AttachParams(vm_id=vm.id)))
    name = f"cc-{vm.id}"
    assert "protocol='iscsi'" in virsh("dumpxml", "--inactive", name).stdout

    started = await cloud.orchestrator.operate(vm.id, Operation.START)
    assert (await cloud.wait(started, timeout=90)).error is None

    volume = await cloud.store.get(Volume, volume.id)
    assert volume.target is not None and volume.target in _info_block(name)
    await _run(cloud, await storage.operate(volume.id, DetachParams()))
    assert "iscsi" not in _info_block(name)
