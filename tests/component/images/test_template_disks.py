"""A VM deployed from a template gets a qcow2 linked clone of the template's file as its disk
(on libvirt's test driver: the domain's XML names the clone); deleting the VM removes the
clone, never the base; a template whose file a clone uses cannot be deleted."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from actors.lifecycle import Operation
from actors.registration import bootstrap_demo
from actors.template_disks import TemplateDisks
from cloudcore.images import ImageLibrary, QemuImg
from cloudcore.store import Store
from cloudcore.store.records import VM, TaskState, Template, TemplateState, VMSpec
from hypervisor_drivers.base import HypervisorDriver
from tests.cloud import cloud_settings, sqlite_store, start_cloud  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None,
    reason="qemu-img is not installed (scripts/lib.sh installs qemu-utils)",
)
GIB = 1024**3


async def qemu_json(*args: str) -> Any:
    done = await asyncio.to_thread(
        subprocess.run, ["qemu-img", *args], check=True, capture_output=True
    )
    return json.loads(done.stdout)


async def library_template(store: Store, library: ImageLibrary, tmp_path: Path) -> Template:
    src = tmp_path / "base.qcow2"
    args = ["qemu-img", "create", "-q", "-f", "qcow2", str(src), "64M"]
    await asyncio.to_thread(subprocess.run, args, check=True)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    await library.repository(None).admit(src, sha)
    return await store.create(
        Template(
            id="tpl-golden",
            name="golden",
            disk_format="qcow2",
            checksum=sha,
            formats={"qcow2": sha},
            virtual_size=64 * 1024 * 1024,
            state=TemplateState.AVAILABLE,
        )
    )


async def test_a_vm_from_a_template_boots_from_a_linked_clone_that_its_delete_removes(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    settings = cloud_settings(tmp_path)
    await bootstrap_demo(sqlite_store, settings)
    library = ImageLibrary(tmp_path / "images", "node-1")
    template = await library_template(sqlite_store, library, tmp_path)
    disks = TemplateDisks(sqlite_store, library, QemuImg())
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(sqlite_store, settings, drivers, disks=disks)
    try:
        task = await orchestrator.deploy(
            tenant_id="demo",
            datacenter_id="dc1",
            name="from-golden",
            spec=VMSpec(cpus=1, memory_mib=256, disk_gib=1, template_id=template.id),
        )
        done = await orchestrator.wait(task.id, 30)
        assert done.state is TaskState.SUCCEEDED, done.error
        vm = await sqlite_store.get(VM, task.subject.removeprefix("vm/"))
        base = library.repository(None).object_path(template.checksum)
        clone = library.repository(None).clone_path(template.checksum, vm.id)

        info = await qemu_json("info", "--output=json", str(clone))
        assert info["format"] == "qcow2"
        assert info["full-backing-filename"] == str(base)
        assert info["virtual-size"] == 1 * GIB  # grown to disk_gib
        assert vm.host_id is not None
        # The domain's definition on the host names the clone (the driver's own connection:
        # libvirt's test driver keeps its state per connection).
        xml = drivers[vm.host_id]._client._domain(vm.id).XMLDesc(0)  # type: ignore[attr-defined]
        assert f"file='{clone}'" in xml or f'file="{clone}"' in xml
        assert await library.repository(None).clone_users(template.checksum) == [vm.id]

        deleted = await orchestrator.wait(
            (await orchestrator.operate(vm.id, Operation.DELETE)).id, 30
        )
        assert deleted.state is TaskState.SUCCEEDED, deleted.error
        assert not clone.exists() and base.exists()
        assert await library.repository(None).clone_users(template.checksum) == []
    finally:
        await system.shutdown()


async def test_a_template_without_a_qcow2_file_fails_the_deploy_with_the_reason(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    settings = cloud_settings(tmp_path)
    await bootstrap_demo(sqlite_store, settings)
    library = ImageLibrary(tmp_path / "images", "node-1")
    await sqlite_store.create(Template(id="tpl-empty", name="empty", state=TemplateState.NEW))
    disks = TemplateDisks(sqlite_store, library, QemuImg())
    system, orchestrator = await start_cloud(sqlite_store, settings, {}, disks=disks)
    try:
        task = await orchestrator.deploy(
            tenant_id="demo",
            datacenter_id="dc1",
            name="no-disk",
            spec=VMSpec(cpus=1, memory_mib=256, template_id="tpl-empty"),
        )
        done = await orchestrator.wait(task.id, 30)
        assert done.state is not TaskState.SUCCEEDED
        assert "has no qcow2 image" in (done.error or "")
    finally:
        await system.shutdown()
