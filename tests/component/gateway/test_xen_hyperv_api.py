"""A simulated XenServer pool and a simulated Hyper-V host driven through the HTTP API, exactly
as libvirt hosts are: hosts registered through ``POST /hosts`` (the simulator's URL, driver
settings as ``driver.*`` capabilities, the password in the environment variable they name), VMs
deployed and taken through their lifecycle, drift behind the orchestrator's back followed
(XAPI's events for XenServer, the driver's polling for Hyper-V), and migration inside the pool at
the driver level (the orchestrator's migrate is refused today).

The simulators (``tests/simulators``) run in this process on loopback ports; the real XenAPI and
pywinrm clients talk to them over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hypervisor_drivers.base import GuestPower
from tests.component.gateway.conftest import ApiClient
from tests.contract.hypervisor.harness import next_event
from tests.simulators.winrm import HyperVHost, WinRMServer, running_winrm
from tests.simulators.winrm._hyperv import OFF
from tests.simulators.xapi import Xapi, XapiServer, running_xapi
from tests.waiting import eventually

XS_PASSWORD_ENV = "CLOUDCORE_TEST_XS_PASSWORD"
HV_PASSWORD_ENV = "CLOUDCORE_TEST_HV_PASSWORD"


@pytest.fixture
def xapi() -> Iterator[XapiServer]:
    pool = Xapi(host_cpus=8, host_memory_kib=8 * 1024 * 1024, users={"cloudcore": "secret"})
    with running_xapi(pool) as server:
        yield server


@pytest.fixture
def winrm_server() -> Iterator[WinRMServer]:
    host = HyperVHost("HV01", cpus=8, memory_kib=8 * 1024 * 1024)
    with running_winrm(host, username="cloudcore-svc") as server:
        yield server


@pytest.fixture(autouse=True)
def _passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(XS_PASSWORD_ENV, "secret")
    monkeypatch.setenv(HV_PASSWORD_ENV, "Passw0rd!")


async def register(
    api: ApiClient, dc: str, host_id: str, hypervisor: str, url: str, **driver: str
) -> None:
    if (await api.call("GET", f"/datacenters/{dc}")).status == 404:
        created = await api.call("POST", "/datacenters", json={"id": dc, "name": dc})
        assert created.status == 201, created.body
    r = await api.call(
        "POST",
        "/hosts",
        "operator",
        {
            "id": host_id,
            "datacenter_id": dc,
            "hypervisor": hypervisor,
            "address": url,
            "cpus": 8,
            "memory_mib": 8192,
            "capabilities": {f"driver.{k}": v for k, v in driver.items()},
        },
    )
    assert r.status == 201, r.body

    async def healthy() -> bool:
        return (await api.call("GET", f"/hosts/{host_id}")).body["health"] == "HEALTHY"

    await eventually(healthy, timeout=10)


async def register_pool(api: ApiClient, xapi: XapiServer) -> None:
    for index in (1, 2):
        await register(
            api,
            "xen",
            f"xs{index}",
            "xenserver",
            xapi.url,
            host=f"xs-host-{index}",
            username="cloudcore",  # not the driver's default: it travels as driver.username
            password_env=XS_PASSWORD_ENV,
            timeout="5",
        )


async def register_hyperv(api: ApiClient, server: WinRMServer) -> None:
    await register(
        api,
        "hyperv",
        "hv1",
        "hyperv",
        server.url,
        transport="basic",
        username="cloudcore-svc",
        password_env=HV_PASSWORD_ENV,
        poll_interval="0.2",
        timeout="5",
    )


async def deploy(api: ApiClient, dc: str, **fields: Any) -> dict[str, Any]:
    body = {"name": f"web-{dc}", "datacenter_id": dc, "cpus": 1, "memory_mib": 256, **fields}
    r = await api.call("POST", "/vms", "alice", body)
    assert r.status == 202, r.body
    task = await api.wait_task(r.body["id"])
    assert task.state == "SUCCEEDED", task.error
    vm = (await api.call("GET", f"/vms/{r.body['subject'].removeprefix('vm/')}", "alice")).body
    assert isinstance(vm, dict)
    return vm


async def act(api: ApiClient, vm_id: str, action: str, body: Any = None) -> dict[str, Any]:
    r = await api.call("POST", f"/vms/{vm_id}/{action}", "alice", body)
    assert r.status == 202, r.body
    task = await api.wait_task(r.body["id"])
    assert task.state == "SUCCEEDED", task.error
    vm = (await api.call("GET", f"/vms/{vm_id}", "alice")).body
    assert isinstance(vm, dict)
    return vm


async def lifecycle(api: ApiClient, vm_id: str) -> None:
    """Every action the two drivers declare, each seen in the API's state."""
    assert (await act(api, vm_id, "pause"))["state"] == "PAUSED"
    assert (await act(api, vm_id, "resume"))["state"] == "RUNNING"
    assert (await act(api, vm_id, "reboot", {"hard": False}))["state"] == "RUNNING"
    assert (await act(api, vm_id, "suspend"))["state"] == "SUSPENDED"
    assert (await act(api, vm_id, "resume"))["state"] == "RUNNING"
    assert (await act(api, vm_id, "snapshot", {"name": "before-upgrade"}))["state"] == "RUNNING"
    assert (await act(api, vm_id, "stop", {"timeout": 0.5}))["state"] == "STOPPED"
    resized = await act(api, vm_id, "reconfigure", {"cpus": 2, "memory_mib": 512})
    assert (resized["spec"]["cpus"], resized["spec"]["memory_mib"]) == (2, 512)
    assert (await act(api, vm_id, "start"))["state"] == "RUNNING"
    assert (await act(api, vm_id, "stop", {"hard": True}))["state"] == "STOPPED"
    assert (await act(api, vm_id, "start"))["state"] == "RUNNING"


async def followed_off(api: ApiClient, vm_id: str) -> dict[str, Any]:
    async def stopped() -> dict[str, Any] | None:
        vm = (await api.call("GET", f"/vms/{vm_id}", "alice")).body
        return vm if vm["state"] == "STOPPED" else None

    vm: dict[str, Any] = await eventually(stopped, timeout=5)
    assert vm["power"] == "OFF" and "followed" in (vm["fault"] or "")
    return vm


async def deleted(api: ApiClient, vm_id: str) -> None:
    r = await api.call("DELETE", f"/vms/{vm_id}", "alice")
    assert r.status == 202, r.body
    task = await api.wait_task(r.body["id"])
    assert task.state == "SUCCEEDED", task.error


async def test_a_xenserver_pool_registered_through_the_api_runs_vms_like_libvirt(
    api: ApiClient, xapi: XapiServer
) -> None:
    await register_pool(api, xapi)
    vm = await deploy(api, "xen")
    assert vm["state"] == "RUNNING" and vm["host_id"] in ("xs1", "xs2")
    xapi_uuid = xapi.xapi.vm_uuid_tagged(vm["id"])  # the VM really is on the simulated pool
    record = xapi.xapi.store.get("VM", xapi.xapi.store.find("VM", uuid=xapi_uuid)[0])
    assert record["power_state"] == "Running"

    await lifecycle(api, vm["id"])
    record = xapi.xapi.store.get("VM", xapi.xapi.store.find("VM", uuid=xapi_uuid)[0])
    assert (record["VCPUs_at_startup"], record["memory_static_max"]) == ("2", str(512 << 20))
    assert len(record["snapshots"]) == 1

    xapi.xapi.guest_powers_off(xapi_uuid)  # from inside the guest: only XAPI's events say so
    await followed_off(api, vm["id"])

    await deleted(api, vm["id"])
    assert xapi.xapi.store.find("VM", uuid=xapi_uuid) == []
    assert all(not r["is_a_snapshot"] for r in xapi.xapi.store.tables["VM"].values())


async def test_a_vm_migrates_inside_the_pool_through_the_driver_and_back(
    api: ApiClient, xapi: XapiServer
) -> None:
    await register_pool(api, xapi)
    vm = await deploy(api, "xen")
    here, there = vm["host_id"], "xs2" if vm["host_id"] == "xs1" else "xs1"
    driver, other = api.drivers[here], api.drivers[there]
    xapi_ref = xapi.xapi.store.find("VM", uuid=xapi.xapi.vm_uuid_tagged(vm["id"]))[0]

    await driver.migrate_vm(vm["id"], other.settings)
    resident = xapi.xapi.store.get("VM", xapi_ref)["resident_on"]
    assert resident == xapi.xapi.host_ref(f"xs-host-{there[-1]}")
    assert vm["id"] in {v.uuid for v in await other.list_vms()}
    assert vm["id"] not in {v.uuid for v in await driver.list_vms()}
    assert await other.power_state(vm["id"]) is GuestPower.RUNNING

    await other.migrate_vm(vm["id"], driver.settings)  # back where the orchestrator placed it
    assert await driver.power_state(vm["id"]) is GuestPower.RUNNING
    assert (await api.call("GET", f"/vms/{vm['id']}", "alice")).body["state"] == "RUNNING"
    await deleted(api, vm["id"])
    assert xapi_ref not in xapi.xapi.store.tables["VM"]


async def test_a_hyperv_host_registered_through_the_api_runs_vms_like_libvirt(
    api: ApiClient, winrm_server: WinRMServer
) -> None:
    await register_hyperv(api, winrm_server)
    vm = await deploy(api, "hyperv")
    assert vm["state"] == "RUNNING" and vm["host_id"] == "hv1"
    host = winrm_server.host
    (hv_id,) = [i for i, v in host.vms.items() if vm["id"] in str(v["Notes"])]
    assert host.vms[hv_id]["State"] == 2  # Running

    await lifecycle(api, vm["id"])
    assert (host.vms[hv_id]["ProcessorCount"], host.vms[hv_id]["MemoryStartup"]) == (2, 512 << 20)

    # The poller compares each look with its last: make sure its last look saw the VM running
    # (a stop and start between two looks is invisible to it; the sweep is for that).
    async with api.drivers["hv1"].subscribe() as events:
        await act(api, vm["id"], "pause")
        await next_event(events, vm["id"], power=GuestPower.PAUSED)
        await act(api, vm["id"], "resume")
        await next_event(events, vm["id"], power=GuestPower.RUNNING)
    # An administrator at the Hyper-V console: only the driver's polling can notice.
    with host.lock:
        host.vms[hv_id]["State"] = OFF
    await followed_off(api, vm["id"])

    await deleted(api, vm["id"])
    assert hv_id not in host.vms
