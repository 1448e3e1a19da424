"""A VM deployed from a template on vcsim: the template's image, converted to raw by the
library (on demand, by the first deploy), is uploaded to the host's datastore as an ESXi VMDK
(the raw bytes as the flat extent ``-flat.vmdk`` and a descriptor naming it; HTTP PUTs to
vCenter's ``/folder`` service, which vcsim models by writing the files into the datastore's
directory, and whose extent it checks when the VM is created) and attached as the VM's boot
disk; deleting the VM deletes the copy (FileManager), never the library's file. What vcsim does
not model: it never reads the disk, so nothing boots from it."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlencode, urlsplit

import aiohttp
import pytest

pytest.importorskip("pyVmomi", reason="the vsphere extra (pyvmomi) is not installed")

from actors.template_disks import TemplateDisks
from cloudcore.app.gateway import Gateway, start_api
from cloudcore.app.gateway.app import bound_port
from cloudcore.images import ImageLibrary, QemuImg
from cloudcore.store import Store
from cloudcore.store.records import Role
from hypervisor_drivers.base import HypervisorDriver
from hypervisor_drivers.vsphere._inventory import read_props
from tests import vcsim
from tests.cloud import sqlite_store, start_cloud  # noqa: F401 - fixture
from tests.component.gateway.conftest import ApiClient, api_settings, make_user
from tests.component.gateway.test_images_api import put_image, qcow2_image, sha
from tests.waiting import eventually


@pytest.fixture(scope="module")
def sim() -> Iterator[vcsim.Vcsim]:
    with vcsim.running_vcsim("-cluster-host", "1", "-host", "0", "-ds", "1") as running:
        yield running


@pytest.fixture
async def api(
    sim: vcsim.Vcsim,
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> AsyncIterator[ApiClient]:
    settings = api_settings(tmp_path)
    library = ImageLibrary(tmp_path / "images", settings.node.id)
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
            for who, tenant, role in (
                ("admin", "system", Role.ADMIN),
                ("alice", "acme", Role.USER),
            ):
                client.users[who], client.tokens[who] = await make_user(
                    sqlite_store, tenant, who, role
                )
            r = await client.call("POST", "/datacenters", "admin", {"id": "vc", "name": "vc"})
            assert r.status == 201, r.body
            body = vcsim.host_registration(sim, "DC0_C0_H0", host_id="esx-0", datacenter_id="vc")
            assert (await client.call("POST", "/hosts", "admin", body)).status == 201

            async def healthy() -> bool:
                host = (await client.call("GET", "/hosts/esx-0")).body
                return bool(host["health"] == "HEALTHY")

            await eventually(healthy, timeout=30)
            yield client
    finally:
        await runner.cleanup()
        await system.shutdown()


def _datastore_get(sim: vcsim.Vcsim, remote: str) -> bytes | None:
    """The file through vCenter's /folder service, or None if it is not there."""
    url = urlsplit(sim.uri)
    query = urlencode({"dcPath": "DC0", "dsName": vcsim.DATASTORE})
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(
            f"https://{url.hostname}:{url.port}/folder/{remote}?{query}", context=context
        ) as reply:
            return bytes(reply.read())
    except HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _disk_files(sim: vcsim.Vcsim, vm_id: str) -> list[str]:
    with vcsim.service_instance(sim) as si:
        vm = si.content.searchIndex.FindByUuid(None, vm_id, vmSearch=True, instanceUuid=True)
        devices: list[Any] = read_props(si.content, vm, ["config.hardware.device"])[
            "config.hardware.device"
        ]
    return [d.backing.fileName for d in devices if hasattr(d.backing, "fileName")]


async def test_a_vm_from_a_template_gets_the_vmdk_copied_to_its_datastore(
    api: ApiClient, sim: vcsim.Vcsim, tmp_path: Path
) -> None:
    image = qcow2_image(tmp_path).read_bytes()
    tid = (await api.call("POST", "/templates", "alice", {"name": "golden"})).body["id"]
    assert (await put_image(api, tid, image, size=len(image), digest=sha(image))).status == 200
    body = {"name": "from-tpl", "datacenter_id": "vc", "cpus": 1, "memory_mib": 64}
    # The template has no raw file: the first deploy has the datacenter's converter make it.
    first = await api.call("POST", "/vms", "alice", {**body, "template_id": tid})
    assert (await api.wait_task(first.body["id"], timeout=60)).error is None
    template = (await api.call("GET", f"/templates/{tid}", "alice")).body
    library_raw = Path(api.settings.node.data_dir) / "images" / "_shared" / "objects"
    library_raw = library_raw / template["formats"]["raw"]

    r = await api.call("POST", "/vms", "alice", {**body, "name": "from-tpl-2", "template_id": tid})
    task = await api.wait_task(r.body["id"], timeout=30)
    assert task.error is None, task.error
    vm_id = task.subject.removeprefix("vm/")
    remote = f"cc-{vm_id}/cc-{vm_id}.vmdk"
    assert f"[{vcsim.DATASTORE}] {remote}" in await asyncio.to_thread(_disk_files, sim, vm_id)
    extent = await asyncio.to_thread(_datastore_get, sim, f"cc-{vm_id}/cc-{vm_id}-flat.vmdk")
    assert extent is not None
    assert hashlib.sha256(extent).hexdigest() == template["formats"]["raw"]
    descriptor = await asyncio.to_thread(_datastore_get, sim, remote)
    assert descriptor is not None
    sectors = template["virtual_size"] // 512
    assert f'RW {sectors} VMFS "cc-{vm_id}-flat.vmdk"'.encode() in descriptor

    deleted = await api.call("DELETE", f"/vms/{vm_id}", "alice")
    assert (await api.wait_task(deleted.body["id"], timeout=30)).error is None
    assert await asyncio.to_thread(_datastore_get, sim, remote) is None
    assert await asyncio.to_thread(_datastore_get, sim, f"cc-{vm_id}/cc-{vm_id}-flat.vmdk") is None
    assert library_raw.exists()
