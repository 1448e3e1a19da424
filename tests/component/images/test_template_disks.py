"""A VM deployed from a template gets a qcow2 linked clone of the template's file as its disk
(on libvirt's test driver: the domain's XML names the clone); deleting the VM removes the
clone, never the base; a template whose file a clone uses cannot be deleted."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from actors.lifecycle import Operation
from actors.orchestrator import Orchestrator
from actors.registration import bootstrap_demo
from actors.template_disks import TemplateDisks
from cloudcore.images import ImageLibrary, QemuImg
from cloudcore.store import Store
from cloudcore.store.records import VM, Task, TaskState, Template, TemplateState, VMSpec
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


@asynccontextmanager
async def library_cloud(
    store: Store, tmp_path: Path, qemu: QemuImg | None = None
) -> AsyncIterator[tuple[Orchestrator, ImageLibrary, dict[str, HypervisorDriver]]]:
    """The demo cloud with an image library (its hosts' drivers by host id), stopped after."""
    settings = cloud_settings(tmp_path)
    await bootstrap_demo(store, settings)
    library = ImageLibrary(tmp_path / "images", "node-1")
    disks = TemplateDisks(store, library, qemu or QemuImg())
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(store, settings, drivers, disks=disks)
    try:
        yield orchestrator, library, drivers
    finally:
        await system.shutdown()


async def stored_template(
    store: Store, library: ImageLibrary, src: Path, fmt: str, template_id: str
) -> Template:
    """A template AVAILABLE whose one file, ``src`` in ``fmt`` (64 MiB), is in the library."""
    sha = hashlib.sha256(await asyncio.to_thread(src.read_bytes)).hexdigest()
    await library.repository(None).admit(src, sha)
    return await store.create(
        Template(
            id=template_id,
            name=template_id.removeprefix("tpl-"),
            disk_format=fmt,
            checksum=sha,
            formats={fmt: sha},
            virtual_size=64 * 1024 * 1024,
            state=TemplateState.AVAILABLE,
        )
    )


async def library_template(store: Store, library: ImageLibrary, tmp_path: Path) -> Template:
    src = tmp_path / "base.qcow2"
    args = ["qemu-img", "create", "-q", "-f", "qcow2", str(src), "64M"]
    await asyncio.to_thread(subprocess.run, args, check=True)
    return await stored_template(store, library, src, "qcow2", "tpl-golden")


async def test_a_vm_from_a_template_boots_from_a_linked_clone_that_its_delete_removes(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    async with library_cloud(sqlite_store, tmp_path) as (orchestrator, library, drivers):
        template = await library_template(sqlite_store, library, tmp_path)
        task = await orchestrator.deploy(
            tenant_id="demo",
            datacenter_id="dc1",
            name="from-golden",
            spec=VMSpec(cpus=1, memory_mib=256, disk_gib=1, template_id=template.id),
        )
        done = await orchestrator.wait(task.id, 30)
        assert done.state is TaskState.SUCCEEDED, done.error
        vm = await sqlite_store.get(VM, task.subject.removeprefix("vm/"))
        assert vm.host_id is not None
        library_file = library.repository(None).object_path(template.checksum)
        cache = library.host_cache(vm.host_id)
        base = cache.base_path(template.checksum)  # the host's copy of the library file
        clone = cache.clone_path(template.checksum, vm.id)

        info = await qemu_json("info", "--output=json", str(clone))
        assert info["format"] == "qcow2"
        assert info["full-backing-filename"] == str(base)
        assert info["virtual-size"] == 1 * GIB  # grown to disk_gib
        assert base.read_bytes() == library_file.read_bytes()
        # The domain's definition on the host names the clone (the driver's own connection:
        # libvirt's test driver keeps its state per connection).
        xml = drivers[vm.host_id]._client._domain(vm.id).XMLDesc(0)  # type: ignore[attr-defined]
        assert f"file='{clone}'" in xml or f'file="{clone}"' in xml
        assert await library.clone_users(None, template.checksum) == [vm.id]

        deleted = await orchestrator.wait(
            (await orchestrator.operate(vm.id, Operation.DELETE)).id, 30
        )
        assert deleted.state is TaskState.SUCCEEDED, deleted.error
        assert not clone.exists() and base.exists() and library_file.exists()
        assert await library.clone_users(None, template.checksum) == []
        # The host's copy stays for the next deploy there, until a sweep finds no clone on it.
        assert await library.sweep() == {vm.host_id: [template.checksum]}
        assert not base.exists() and library_file.exists()


async def test_a_template_without_a_qcow2_file_fails_the_deploy_with_the_reason(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    await sqlite_store.create(Template(id="tpl-empty", name="empty", state=TemplateState.NEW))
    async with library_cloud(sqlite_store, tmp_path) as (orchestrator, _, _):
        task = await orchestrator.deploy(
            tenant_id="demo",
            datacenter_id="dc1",
            name="no-disk",
            spec=VMSpec(cpus=1, memory_mib=256, template_id="tpl-empty"),
        )
        done = await orchestrator.wait(task.id, 30)
        assert done.state is not TaskState.SUCCEEDED
        assert "has no qcow2 image" in (done.error or "")


async def raw_template(store: Store, library: ImageLibrary, tmp_path: Path) -> Template:
    """A template whose only file is raw: a deploy on libvirt needs it in qcow2."""
    src = tmp_path / "base.raw"
    with src.open("wb") as f:
        f.write(b"\x5a" * 1024 * 1024)
        f.truncate(64 * 1024 * 1024)
    return await stored_template(store, library, src, "raw", "tpl-raw")


async def deploy_two(orchestrator: Any, template: Template) -> list[Any]:
    tasks = await asyncio.gather(
        *(
            orchestrator.deploy(
                tenant_id="demo",
                datacenter_id="dc1",
                name=f"from-raw-{n}",
                spec=VMSpec(cpus=1, memory_mib=256, disk_gib=1, template_id=template.id),
            )
            for n in range(2)
        )
    )
    return list(await asyncio.gather(*(orchestrator.wait(t.id, 60) for t in tasks)))


async def test_two_deploys_needing_the_same_conversion_run_it_once(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    async with library_cloud(sqlite_store, tmp_path) as (orchestrator, library, _):
        template = await raw_template(sqlite_store, library, tmp_path)
        done = await deploy_two(orchestrator, template)
        assert [d.state for d in done] == [TaskState.SUCCEEDED] * 2, [d.error for d in done]
        page = await sqlite_store.list(Task, where={"subject": f"template/{template.id}"})
        conversions = [t for t in page.items if t.kind == "template.convert"]
        assert [(t.state, t.data["format"]) for t in conversions] == [
            (TaskState.SUCCEEDED, "qcow2")
        ]
        after = await sqlite_store.get(Template, template.id)
        assert set(after.formats) == {"raw", "qcow2"}
        for d in done:  # both clones on the one converted base
            vm = await sqlite_store.get(VM, d.subject.removeprefix("vm/"))
            assert vm.host_id is not None
            cache = library.host_cache(vm.host_id)
            assert cache.clone_path(after.formats["qcow2"], vm.id).exists()


async def test_a_failed_conversion_fails_the_deploys_waiting_on_it_naming_it(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    broken = tmp_path / "qemu-img"
    broken.write_text(
        '#!/bin/sh\nif [ "$1" = convert ]; then echo "no space left" >&2; exit 1; fi\n'
        'exec qemu-img "$@"\n'
    )
    broken.chmod(0o755)
    qemu = QemuImg(str(broken))
    async with library_cloud(sqlite_store, tmp_path, qemu) as (orchestrator, library, _):
        template = await raw_template(sqlite_store, library, tmp_path)
        done = await deploy_two(orchestrator, template)
        for d in done:
            assert d.state is not TaskState.SUCCEEDED
            assert "could not be converted to qcow2" in (d.error or ""), d.error
            assert "no space left" in (d.error or ""), d.error
        page = await sqlite_store.list(Task, where={"subject": f"template/{template.id}"})
        assert len([t for t in page.items if t.kind == "template.convert"]) >= 1
        after = await sqlite_store.get(Template, template.id)
        assert after.state is TemplateState.AVAILABLE and set(after.formats) == {"raw"}
        assert list(library.repository(None).tmp.iterdir()) == []
