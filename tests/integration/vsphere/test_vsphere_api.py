"""vSphere end to end, on vcsim: a datacenter whose ESXi hosts are registered through the HTTP
API, VMs deployed and driven through the API, checked on vCenter with pyvmomi; drift made behind
the orchestrator's back; a VM moved by its host's driver to the other ESXi host."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyVmomi", reason="the vsphere extra (pyvmomi) is not installed")

from cloudcore.store import Store
from hypervisor_drivers.base import GuestPower
from hypervisor_drivers.vsphere._inventory import read_props
from tests import vcsim
from tests.cloud import sqlite_store  # noqa: F401 - fixture
from tests.component.gateway.conftest import ApiClient, api_settings, serve_api
from tests.waiting import eventually

_PATHS = [
    "runtime.powerState",
    "runtime.host",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
]
HOSTS = {"esx-0": "DC0_C0_H0", "esx-1": "DC0_C0_H1"}


@pytest.fixture(scope="module")
def sim() -> Iterator[vcsim.Vcsim]:
    with vcsim.running_vcsim("-cluster-host", "2", "-host", "0", "-ds", "1") as running:
        yield running


@pytest.fixture
async def api(
    sim: vcsim.Vcsim,
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> AsyncIterator[ApiClient]:
    """The API with a datacenter ``vc`` of two vcsim ESXi hosts, registered through it."""
    async with serve_api(sqlite_store, api_settings(tmp_path)) as client:
        r = await client.call("POST", "/datacenters", "admin", {"id": "vc", "name": "vcenter"})
        assert r.status == 201, r.body
        for host_id, name in HOSTS.items():
            body = vcsim.host_registration(sim, name, host_id=host_id, datacenter_id="vc")
            r = await client.call("POST", "/hosts", "operator", body)
            assert r.status == 201, r.body

        async def healthy() -> bool:
            hosts = [(await client.call("GET", f"/hosts/{h}")).body for h in HOSTS]
            return all(h["health"] == "HEALTHY" for h in hosts)

        await eventually(healthy, timeout=30)
        yield client


def _on_vcenter(sim: vcsim.Vcsim, vm_id: str) -> dict[str, Any] | None:
    """What vCenter itself says of a VM (by its instance uuid, the VM's id), or None."""
    with vcsim.service_instance(sim) as si:
        vm = si.content.searchIndex.FindByUuid(None, vm_id, vmSearch=True, instanceUuid=True)
        if vm is None:
            return None
        # Through the PropertyCollector: vcsim drops the connection when pyvmomi's attribute
        # access reads an unset property (``snapshot`` before the first one).
        props = read_props(si.content, vm, [*_PATHS, "snapshot"])
        tree = props.get("snapshot")
        return {
            "power": str(props["runtime.powerState"]),
            "host": props["runtime.host"].name,
            "cpus": props["config.hardware.numCPU"],
            "memory_mib": props["config.hardware.memoryMB"],
            "snapshots": [s.name for s in tree.rootSnapshotList] if tree else [],
        }


async def _vcenter(sim: vcsim.Vcsim, vm_id: str) -> dict[str, Any] | None:
    return await asyncio.to_thread(_on_vcenter, sim, vm_id)


async def _done(api: ApiClient, r: Any) -> dict[str, Any]:
    assert r.status == 202, r.body
    task = await api.wait_task(r.body["id"], timeout=30)
    assert task.error is None, task.error
    vm_id = r.body["subject"].removeprefix("vm/")
    vm = await api.call("GET", f"/vms/{vm_id}", "alice")
    assert vm.status == 200, vm.body
    return dict(vm.body)


async def _deploy(api: ApiClient, name: str) -> dict[str, Any]:
    body = {"name": name, "datacenter_id": "vc", "cpus": 1, "memory_mib": 64}
    return await _done(api, await api.call("POST", "/vms", "alice", body))


async def test_hosts_registered_through_the_api_are_vcsim_esxi_hosts(api: ApiClient) -> None:
    r = await api.call("GET", "/hosts?datacenter_id=vc")
    hosts = {h["id"]: h for h in r.body["items"]}
    assert set(hosts) == set(HOSTS)
    for host_id, name in HOSTS.items():
        assert hosts[host_id]["hypervisor"] == "vsphere"
        assert hosts[host_id]["capabilities"]["driver.host"] == name
        inventory = await api.drivers[host_id].host_inventory()
        assert inventory.hostname == name


async def test_a_vm_deployed_through_the_api_goes_through_its_lifecycle_on_vcsim(
    api: ApiClient, sim: vcsim.Vcsim
) -> None:
    vm = await _deploy(api, "web")
    vm_id = vm["id"]
    assert vm["state"] == "RUNNING"
    seen = await _vcenter(sim, vm_id)
    assert seen is not None
    assert seen["power"] == "poweredOn"
    assert seen["host"] == HOSTS[vm["host_id"]]
    assert (seen["cpus"], seen["memory_mib"]) == (1, 64)

    async def act(action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return await _done(api, await api.call("POST", f"/vms/{vm_id}/{action}", "alice", body))

    # vcsim has no VMware Tools in its guests: the graceful stop ends hard at its deadline.
    assert (await act("stop", {"timeout": 1}))["state"] == "STOPPED"
    assert (await _vcenter(sim, vm_id) or {})["power"] == "poweredOff"
    # Stopped: beyond the size it was made with (a running VM may grow up to that only).
    resized = await act("reconfigure", {"memory_mib": 128})
    assert resized["spec"]["memory_mib"] == 128
    assert (await _vcenter(sim, vm_id) or {})["memory_mib"] == 128
    assert (await act("start"))["state"] == "RUNNING"
    assert (await _vcenter(sim, vm_id) or {})["power"] == "poweredOn"
    assert (await act("reboot", {"hard": True}))["state"] == "RUNNING"
    assert (await act("suspend"))["state"] == "SUSPENDED"
    assert (await _vcenter(sim, vm_id) or {})["power"] == "suspended"
    assert (await act("resume"))["state"] == "RUNNING"
    assert (await _vcenter(sim, vm_id) or {})["power"] == "poweredOn"
    await act("snapshot", {"name": "before-upgrade"})
    assert (await _vcenter(sim, vm_id) or {})["snapshots"] == ["before-upgrade"]
    r = await api.call("DELETE", f"/vms/{vm_id}", "alice")
    assert r.status == 202, r.body
    assert (await api.wait_task(r.body["id"], timeout=30)).error is None
    assert await _vcenter(sim, vm_id) is None


async def test_a_vm_powered_off_behind_our_back_is_followed(
    api: ApiClient, sim: vcsim.Vcsim
) -> None:
    vm = await _deploy(api, "drifter")

    def power_off() -> None:
        with vcsim.service_instance(sim) as si:
            found = si.content.searchIndex.FindByUuid(
                None, vm["id"], vmSearch=True, instanceUuid=True
            )
            from pyVim.task import WaitForTask

            WaitForTask(found.PowerOffVM_Task())

    await asyncio.to_thread(power_off)

    async def followed() -> dict[str, Any] | None:
        now = (await api.call("GET", f"/vms/{vm['id']}", "alice")).body
        return dict(now) if now["state"] == "STOPPED" else None

    # Seen from the PropertyCollector's event (the sweep runs hourly in these tests).
    now = await eventually(followed, timeout=10)
    assert "followed" in (now["fault"] or "")  # the default policy: record what vCenter shows
    assert (await _vcenter(sim, vm["id"]) or {})["power"] == "poweredOff"


async def test_the_host_driver_moves_an_api_vm_to_the_other_esxi_host(
    api: ApiClient, sim: vcsim.Vcsim
) -> None:
    """Migration at the driver level (the orchestrator's migration is another issue): the
    driver of the VM's host relocates it, running, to the other host's driver settings."""
    vm = await _deploy(api, "mover")
    source = vm["host_id"]
    (target,) = set(HOSTS) - {source}
    destination = api.drivers[target].settings
    await api.drivers[source].migrate_vm(vm["id"], destination)
    seen = await _vcenter(sim, vm["id"])
    assert seen is not None
    assert (seen["host"], seen["power"]) == (HOSTS[target], "poweredOn")
    # By its uuid (vcsim 0.24 does not add a relocated VM to the target's host.vm list).
    assert (await api.drivers[target].get_vm(vm["id"])).power is GuestPower.RUNNING
    assert vm["id"] not in {v.uuid for v in await api.drivers[source].list_vms()}
