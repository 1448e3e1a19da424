"""A VM boots from a volume on real components, through the HTTP API.

A volume is created on a private tgtd; a boot sector that writes a line to the first serial
port (the one ``tests/integration/images`` boots from a template) is written onto its LUN by
QEMU's own initiator (``qemu-img convert`` to the export, with CHAP). ``POST /vms`` names the
volume as the boot volume: the deploy exports it to the initiator of the host the VM was
placed on, attaches it to the defined domain as an iSCSI disk with ``<boot order='1'/>``, and
starts the VM; SeaBIOS boots the LUN and the line appears in the serial log. Deleting the VM
(``delete_on_termination``) detaches the volume, unexports it and deletes it.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from actors.journal import FINAL
from cloudcore.app.gateway import Gateway, start_api
from cloudcore.app.gateway.app import bound_port
from cloudcore.config import StorageConfig
from cloudcore.store import Store
from cloudcore.store.records import (
    VM,
    Role,
    StepState,
    Task,
    TaskState,
    VMState,
    Volume,
    VolumeState,
)
from hypervisor_drivers.base import HypervisorDriver
from storage_drivers.base import StorageSettings
from storage_drivers.registry import create_driver
from tests.cloud import start_cloud
from tests.component.gateway.conftest import ApiClient, api_settings, make_user
from tests.contract.storage import initiator
from tests.contract.storage.tgtd import Tgtd
from tests.integration.images.test_boot_from_template import boot_sector
from tests.integration.libvirt.conftest import IMAGES, virsh
from tests.integration.orchestrator.test_real_libvirt import _datacenter_on, _forget_vms
from tests.integration.storage.conftest import tgt_pool
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(240)

MESSAGE = b"cloudcore booted from its iSCSI volume"
WRITER = "iqn.2026-12.test.cloudcore:image-writer"


@pytest.fixture
async def iscsi_api(
    libvirtd: str, domain_type: str, sqlite_store: Store, tgtd: Tgtd, tmp_path: Path
) -> AsyncIterator[tuple[ApiClient, Path]]:
    """The API of a cloud whose host is the real libvirtd and whose pool is on ``tgtd``; the
    serial logs below IMAGES, where QEMU (user libvirt-qemu) writes them."""
    logs = IMAGES / f"cc-test-bootvol-{uuid.uuid4().hex[:8]}"
    logs.mkdir(parents=True)
    base = api_settings(tmp_path)
    settings = msgspec.structs.replace(
        base,
        storage=StorageConfig(pools=[tgt_pool(tmp_path, tgtd)]),
        orchestrator=msgspec.structs.replace(base.orchestrator, watchdog_interval=1.0),
    )
    await _datacenter_on(
        sqlite_store, settings, libvirtd, domain_type=domain_type, serial_log_dir=str(logs)
    )
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(sqlite_store, settings, drivers)
    runner = await start_api(Gateway.of(settings, system, orchestrator))
    try:
        async with aiohttp.ClientSession() as session:
            client = ApiClient(
                f"http://127.0.0.1:{bound_port(runner)}/api/v1",
                session,
                sqlite_store,
                orchestrator,
                system,
                settings,
                drivers=drivers,
            )
            client.users["alice"], client.tokens["alice"] = await make_user(
                sqlite_store, "t1", "alice", Role.USER
            )
            yield client, logs
    finally:
        await runner.cleanup()
        await system.shutdown()
        _forget_vms([vm.id for vm in (await sqlite_store.list(VM, limit=100)).items])
        shutil.rmtree(logs, ignore_errors=True)


async def _write_boot_image(api: ApiClient, volume_id: str, tmp_path: Path) -> None:
    """The boot sector onto the volume's LUN, through an export of its own (then removed)."""
    pool = api.settings.storage.pools[0]
    driver = create_driver(
        "tgt",
        StorageSettings(
            pool=pool.path or "",
            portal_host=pool.portal_host,
            portal_port=pool.portal_port,
            iqn_prefix=pool.iqn_prefix,
            extra=dict(pool.extra),
        ),
    )
    raw = tmp_path / "boot.raw"
    with raw.open("wb") as f:
        f.write(boot_sector(MESSAGE))
        f.truncate(1024 * 1024)
    await driver.connect()
    try:
        connection = await driver.export_volume(volume_id, WRITER)
        await initiator.write_image(connection, str(raw))
        await driver.unexport_volume(volume_id)
    finally:
        await driver.close()


def _targets(tgtd: Tgtd) -> str:
    return subprocess.run(
        ["tgtadm", "-C", str(tgtd.control_port), "--lld", "iscsi", "--op", "show",
         "--mode", "target"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip


async def _boot_volume(api: ApiClient, tmp_path: Path) -> str:
    """A volume holding the boot sector."""
    r = await api.call(
        "POST", "/volumes", "alice", {"name": "root", "datacenter_id": "dc1", "size_gib": 1}
    )
    assert r.status == 202, r.body
    assert (await api.wait_task(r.body["id"], timeout=60)).error is None
    volume_id = str(r.body["subject"]).removeprefix("volume/")
    await _write_boot_image(api, volume_id, tmp_path)
    return volume_id


def _from_volume(volume_id: str, delete_on_termination: bool) -> dict[str, object]:
    return {
        "name": "from-volume",
        "datacenter_id": "dc1",
        "cpus": 1,
        "memory_mib": 64,
        "boot_volume": {"volume_id": volume_id, "delete_on_termination": delete_on_termination},
    }


async def test_a_vm_created_from_a_volume_boots_it_on_real_qemu_and_its_delete_deletes_it(
    iscsi_api: tuple[ApiClient, Path], tgtd: Tgtd, tmp_path: Path
) -> None:
    api, logs = iscsi_api
    volume_id = await _boot_volume(api, tmp_path)
    assert volume_id not in _targets(tgtd)  # the writer's export is gone

    r = await api.call("POST", "/vms", "alice", _from_volume(volume_id, True))
    assert r.status == 202, r.body
    task = await api.wait_task(r.body["id"], timeout=120)
    assert task.error is None, task.error
    vm_id = task.subject.removeprefix("vm/")
    log = logs / f"cc-{vm_id}.serial.log"

    async def printed() -> bool:
        return log.exists() and MESSAGE in log.read_bytes()

    await eventually(printed, timeout=90)

    volume = await api.store.get(Volume, volume_id)
    assert (volume.state, volume.vm_id, volume.device) == (VolumeState.ATTACHED, vm_id, "sda")
    vm = await api.store.get(VM, vm_id)
    domain = ET.fromstring(virsh("dumpxml", f"cc-{vm_id}").stdout)
    assert domain.find("os/boot") is None  # booted by device order only
    (disk,) = domain.findall("devices/disk")
    source = disk.find("source")
    assert source is not None and source.get("protocol") == "iscsi"
    assert source.get("name", "").startswith(str(volume.target))
    assert disk.findtext("serial") == volume_id
    assert disk.find("boot") is not None and disk.find("boot").get("order") == "1"  # type: ignore[union-attr]
    assert f"iqn.2026-12.org.cloudcore.host:{vm.host_id}" in _targets(tgtd)  # the host's ACL

    r = await api.call("DELETE", f"/vms/{vm_id}", "alice")
    assert r.status == 202, r.body
    assert (await api.wait_task(r.body["id"], timeout=90)).error is None
    assert (await api.store.get(Volume, volume_id)).state is VolumeState.DELETED
    assert (await api.call("GET", f"/volumes/{volume_id}", "alice")).status == 404
    assert volume_id not in _targets(tgtd)
    assert not (tmp_path / "pool" / "volumes" / f"{volume_id}.img").exists()
    assert virsh("dominfo", f"cc-{vm_id}", check=False).returncode != 0


async def test_a_deploy_cut_short_after_attaching_its_boot_volume_resumes_and_boots_it(
    iscsi_api: tuple[ApiClient, Path], tgtd: Tgtd, tmp_path: Path
) -> None:
    """The node stops while the deploy starts the VM (its boot volume attached); on the next
    start the deploy resumes: it defines the domain again, which drops the disk, so the boot
    volume is attached afresh before the VM starts, and the VM boots from it."""
    api, logs = iscsi_api
    store = api.store
    volume_id = await _boot_volume(api, tmp_path)
    (host_id,) = api.drivers

    async def never(vm_id: str) -> None:  # the start the node stop cuts short
        await asyncio.Event().wait()

    api.drivers[host_id].start_vm = never  # type: ignore[method-assign]
    r = await api.call("POST", "/vms", "alice", _from_volume(volume_id, False))
    assert r.status == 202, r.body
    deploy_id, vm_id = str(r.body["id"]), str(r.body["subject"]).removeprefix("vm/")

    async def starting() -> bool:
        steps = [(s.name, s.state) for s in await store.list_steps(deploy_id)]
        return ("start", StepState.RUNNING) in steps

    await eventually(starting, timeout=60)
    assert (await store.get(Volume, volume_id)).vm_id == vm_id
    await api.system.shutdown()  # the node stops: the deploy stays RUNNING in the store
    assert (await store.get(Task, deploy_id)).state is TaskState.RUNNING

    system, _ = await start_cloud(store, api.settings, {})
    try:

        async def ended() -> bool:
            return (await store.get(Task, deploy_id)).state in FINAL

        await eventually(ended, timeout=120)
        assert (await store.get(Task, deploy_id)).error is None
        log = logs / f"cc-{vm_id}.serial.log"

        async def printed() -> bool:
            return log.exists() and MESSAGE in log.read_bytes()

        await eventually(printed, timeout=90)
        volume = await store.get(Volume, volume_id)
        assert (volume.state, volume.vm_id) == (VolumeState.ATTACHED, vm_id)
        assert (await store.get(VM, vm_id)).state is VMState.RUNNING
        tasks = await store.list(Task, where={"subject": f"volume/{volume_id}"})
        kinds = [t.kind for t in tasks.items]
        assert kinds == ["volume.create", "volume.attach", "volume.detach", "volume.attach"]
    finally:
        await system.shutdown()
