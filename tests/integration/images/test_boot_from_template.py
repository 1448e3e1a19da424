"""A VM boots from its template's disk on real QEMU.

The template's image is made here: a 512-byte boot sector (hand-assembled x86 real-mode code)
that writes a line to the first serial port (I/O port 0x3f8) and halts, in a qcow2 file. It is
uploaded through the API like any image; a VM deployed from it on ``qemu:///system`` gets a
qcow2 linked clone of the host's cached copy of the library file as its disk, SeaBIOS boots the
clone, and the line appears in the VM's serial log (virtlogd writes it, driver option
``serial_log_dir``). The template cannot be deleted while the VM's clone uses it; deleting the
VM removes the clone and leaves the template's file; deleting the template removes the host's
copy too.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from actors.template_disks import TemplateDisks
from cloudcore.app.gateway import Gateway, start_api
from cloudcore.app.gateway.app import bound_port
from cloudcore.config import ImagesSettings
from cloudcore.images import ImageLibrary, QemuImg
from cloudcore.store import Store
from cloudcore.store.records import VM, Role
from hypervisor_drivers.base import HypervisorDriver
from tests.cloud import start_cloud
from tests.component.gateway.conftest import ApiClient, api_settings, make_user
from tests.integration.libvirt.conftest import IMAGES, virsh
from tests.integration.orchestrator.test_real_libvirt import _datacenter_on, _forget_vms
from tests.waiting import eventually

MESSAGE = b"cloudcore booted from its template disk"

# cli; cld; xor ax,ax; mov ds,ax; mov si,0x7c17; mov dx,0x3f8
# next: lodsb; test al,al; jz done; out dx,al; jmp next
# done: hlt; jmp done          (23 bytes; the message follows at 0x7c17)
_CODE = bytes.fromhex("fa fc 31c0 8ed8 be177c baf803 ac 84c0 7403 ee ebf8 f4 ebfd")


def boot_sector(message: bytes) -> bytes:
    assert len(_CODE) == 0x17
    sector = _CODE + message + b"\r\n\0"
    return sector.ljust(510, b"\0") + b"\x55\xaa"


def bootable_qcow2(directory: Path) -> bytes:
    raw = directory / "boot.raw"
    with raw.open("wb") as f:
        f.write(boot_sector(MESSAGE))
        f.truncate(1024 * 1024)
    out = directory / "boot.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)],
        check=True,
        timeout=30,
    )
    return out.read_bytes()


@pytest.fixture
async def qemu_api(
    libvirtd: str, domain_type: str, sqlite_store: Store, tmp_path: Path
) -> AsyncIterator[tuple[ApiClient, Path]]:
    """The API of a cloud whose one host is ``qemu:///system``; its image library and the
    serial logs below IMAGES, where QEMU (user libvirt-qemu) can read them."""
    scratch = IMAGES / f"cc-test-lib-{uuid.uuid4().hex[:8]}"
    logs = scratch / "serial"
    logs.mkdir(parents=True)
    settings = msgspec.structs.replace(
        api_settings(tmp_path), images=ImagesSettings(repository_dir=str(scratch / "lib"))
    )
    await _datacenter_on(
        sqlite_store, settings, libvirtd, domain_type=domain_type, serial_log_dir=str(logs)
    )
    library = ImageLibrary(scratch / "lib", settings.node.id)
    disks = TemplateDisks(sqlite_store, library, QemuImg())
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(sqlite_store, settings, drivers, disks=disks)
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
        shutil.rmtree(scratch, ignore_errors=True)


async def upload(api: ApiClient, template_id: str, image: bytes) -> dict[str, object]:
    digest = hashlib.sha256(image).hexdigest()
    url = f"{api.base}/templates/{template_id}/image?size={len(image)}&sha256={digest}"
    headers = {
        "Content-Type": "application/octet-stream",
        "Authorization": f"Bearer {api.tokens['alice']}",
    }
    async with api.session.put(url, data=io.BytesIO(image), headers=headers) as r:
        body = await r.json()
        assert r.status == 200, body
        return dict(body)


@pytest.mark.timeout(120)
async def test_a_vm_deployed_from_an_uploaded_template_boots_its_disk_on_real_qemu(
    qemu_api: tuple[ApiClient, Path], tmp_path: Path
) -> None:
    api, logs = qemu_api
    image = bootable_qcow2(tmp_path)
    created = await api.call("POST", "/templates", "alice", {"name": "hello-serial"})
    assert created.status == 201, created.body
    tid = created.body["id"]
    template = await upload(api, tid, image)
    assert template["state"] == "AVAILABLE" and template["disk_format"] == "qcow2"

    r = await api.call(
        "POST",
        "/vms",
        "alice",
        {
            "name": "booter",
            "datacenter_id": "dc1",
            "cpus": 1,
            "memory_mib": 64,
            "disk_gib": 1,
            "template_id": tid,
        },
    )
    assert r.status == 202, r.body
    task = await api.wait_task(r.body["id"], timeout=90)
    assert task.error is None, task.error
    vm_id = task.subject.removeprefix("vm/")
    log = logs / f"cc-{vm_id}.serial.log"

    async def printed() -> bool:
        return log.exists() and MESSAGE in log.read_bytes()

    await eventually(printed, timeout=60)

    # The disk QEMU runs is a linked clone whose backing file is the host's cached copy of the
    # template's library file: one copy on the host, byte for byte the library's.
    xml = virsh("dumpxml", f"cc-{vm_id}").stdout
    sha = str(template["checksum"])
    root = Path(api.settings.images.repository_dir)
    library_file = root / "_shared" / "objects" / sha
    host_id = (await api.store.get(VM, vm_id)).host_id
    assert host_id is not None
    host_dir = root.parent / f"{root.name}.hosts" / host_id
    base = host_dir / "bases" / sha
    clone = host_dir / "clones" / sha / f"{vm_id}.qcow2"
    assert str(clone) in xml
    probe = await asyncio.create_subprocess_exec(
        "qemu-img", "info", "-U", "--output=json", str(clone), stdout=asyncio.subprocess.PIPE
    )
    info = json.loads((await probe.communicate())[0])
    assert info["full-backing-filename"] == str(base)
    assert info["virtual-size"] == 1024**3
    assert sorted(p.name for p in (host_dir / "bases").iterdir()) == [sha]
    assert hashlib.sha256(base.read_bytes()).hexdigest() == sha

    refused = await api.call("DELETE", f"/templates/{tid}", "alice")
    assert refused.status == 409 and vm_id in refused.body["error"]["message"]

    deleted = await api.call("DELETE", f"/vms/{vm_id}", "alice")
    assert deleted.status == 202, deleted.body
    assert (await api.wait_task(deleted.body["id"], timeout=60)).error is None
    assert not clone.exists() and base.exists() and library_file.exists()
    assert hashlib.sha256(library_file.read_bytes()).hexdigest() == sha  # untouched
    assert (await api.call("DELETE", f"/templates/{tid}", "alice")).status == 204
    assert not library_file.exists() and not base.exists()  # the host's copy goes with it
