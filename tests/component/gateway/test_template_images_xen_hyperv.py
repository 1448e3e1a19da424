"""Templates on the simulated hypervisors. A VM deployed from a template on a XenServer pool
(the XAPI simulator): the template's image, converted to VHD by the library, is imported into a
new VDI on the host's SR (``VDI.create``, then an HTTP PUT of the VHD to XAPI's
``/import_raw_vdi?format=vhd``, which the simulator checks: a session, a VHD footer declaring
the VDI's size) and attached as the boot disk; the VDI is destroyed with the VM, never the
library's file. What the simulator does not model: it keeps the VHD's sha256, not its blocks, so
nothing boots from it. A template without a VHD is converted first, by the deploy. On Hyper-V
(the WinRM simulator, through the real pywinrm) the template's VHDX is copied to the host in
PowerShell scripts over WinRM itself, checked by Get-FileHash, attached as the boot disk and
removed with the VM."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cloudcore.store import Store
from tests.cloud import sqlite_store  # noqa: F401 - fixture
from tests.component.gateway.conftest import ApiClient, api_settings, serve_api
from tests.component.gateway.test_images_api import put_image, qcow2_image, sha
from tests.component.gateway.test_xen_hyperv_api import (
    HV_PASSWORD_ENV,
    XS_PASSWORD_ENV,
    register_hyperv,
    register_pool,
)
from tests.simulators.winrm import HyperVHost, running_winrm
from tests.simulators.xapi import Xapi, XapiServer, running_xapi


@pytest.fixture
def xapi() -> Iterator[XapiServer]:
    pool = Xapi(host_cpus=8, host_memory_kib=8 * 1024 * 1024, users={"cloudcore": "secret"})
    with running_xapi(pool) as server:
        yield server


@pytest.fixture
async def api(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[ApiClient]:
    monkeypatch.setenv(XS_PASSWORD_ENV, "secret")
    async with serve_api(sqlite_store, api_settings(tmp_path)) as client:
        yield client


async def test_a_vm_from_a_template_gets_its_vhd_imported_into_a_vdi(
    api: ApiClient, xapi: XapiServer, tmp_path: Path
) -> None:
    await register_pool(api, xapi)
    image = qcow2_image(tmp_path).read_bytes()
    tid = (await api.call("POST", "/templates", "alice", {"name": "golden"})).body["id"]
    assert (await put_image(api, tid, image, size=len(image), digest=sha(image))).status == 200
    body = {"name": "from-tpl", "datacenter_id": "xen", "cpus": 1, "memory_mib": 256}
    # The template has no VHD: the deploy has the datacenter's converter make it first.
    r = await api.call("POST", "/vms", "alice", {**body, "template_id": tid})
    assert (await api.wait_task(r.body["id"])).error is None
    template = (await api.call("GET", f"/templates/{tid}", "alice")).body
    assert set(template["formats"]) == {"qcow2", "vpc"}
    vhd = Path(api.settings.node.data_dir) / "images" / "_shared" / "objects"
    vhd = vhd / template["formats"]["vpc"]

    r = await api.call("POST", "/vms", "alice", {**body, "name": "from-tpl-2", "template_id": tid})
    task = await api.wait_task(r.body["id"])
    assert task.error is None, task.error
    vm_id = task.subject.removeprefix("vm/")
    pool = xapi.xapi
    vdis = pool.store.find("VDI", name_label=f"cc-{vm_id}")
    assert len(vdis) == 1
    vdi = pool.store.get("VDI", vdis[0])
    assert pool.imported[vdi["uuid"]] == (
        hashlib.sha256(vhd.read_bytes()).hexdigest(),
        vhd.stat().st_size,
    )
    assert int(vdi["virtual_size"]) == template["virtual_size"]
    vbd = pool.store.get("VBD", vdi["VBDs"][0])
    assert (vbd["userdevice"], pool.store.get("VM", vbd["VM"])["name_label"]) == (
        "0",
        f"cc-{vm_id}",
    )

    deleted = await api.call("DELETE", f"/vms/{vm_id}", "alice")
    assert (await api.wait_task(deleted.body["id"])).error is None
    assert pool.store.find("VDI", name_label=f"cc-{vm_id}") == []
    assert vhd.exists()


def test_the_simulator_refuses_a_body_that_is_no_vhd(xapi: XapiServer) -> None:
    pool = xapi.xapi
    session = pool.store.login("cloudcore", "secret")
    sr = next(iter(pool.store.tables["SR"]))
    vdi = pool.call("VDI.create", [session, {"SR": sr, "virtual_size": "512", "name_label": "x"}])
    status, _ = pool.import_vdi(
        "/import_raw_vdi", {"vdi": vdi, "format": "vhd", "session_id": session}, 512, "", b"x"
    )
    assert status == 400
    assert pool.import_vdi("/import_raw_vdi", {"vdi": vdi}, 512, "", b"")[0] == 403


async def test_a_vm_from_a_template_on_hyperv_gets_its_vhdx_copied_through_winrm(
    api: ApiClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HV_PASSWORD_ENV, "Passw0rd!")
    host = HyperVHost("HV01", cpus=8, memory_kib=8 * 1024 * 1024)
    with running_winrm(host, username="cloudcore-svc") as server:
        await register_hyperv(api, server)
        image = qcow2_image(tmp_path).read_bytes()
        tid = (await api.call("POST", "/templates", "alice", {"name": "golden"})).body["id"]
        assert (await put_image(api, tid, image, size=len(image), digest=sha(image))).status == 200
        body = {"name": "hv", "datacenter_id": "hyperv", "cpus": 1, "memory_mib": 256}
        r = await api.call("POST", "/vms", "alice", {**body, "template_id": tid})
        task = await api.wait_task(r.body["id"])
        assert task.error is None, task.error
        vm_id = task.subject.removeprefix("vm/")

        # Converted to VHDX on demand, then copied to the host byte for byte.
        template = (await api.call("GET", f"/templates/{tid}", "alice")).body
        vhdx = Path(api.settings.node.data_dir) / "images" / "_shared" / "objects"
        vhdx = vhdx / template["formats"]["vhdx"]
        copy = f"{host.virtual_hard_disk_path}\\cc-{vm_id}.vhdx"
        assert host.disk_files.get(copy) == vhdx.read_bytes()
        assert list(host.disk_files.files) == [copy.lower()]  # no partial file left
        (vm,) = host.vms.values()
        assert [d["Path"] for d in vm["disks"]][:1] == [copy]  # the boot disk
        # Runs of zeros travel as their length: far fewer scripts than 6 KiB pieces.
        appends = [s for s in host.scripts if "Add-Content" in s]
        assert 0 < len(appends) < vhdx.stat().st_size // (6 * 1024) // 4

        deleted = await api.call("DELETE", f"/vms/{vm_id}", "alice")
        assert (await api.wait_task(deleted.body["id"])).error is None
        assert host.disk_files.files == {} and vhdx.exists()
