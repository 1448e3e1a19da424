"""End to end on a real hypervisor: a network and a VM created through the HTTP API, the VM
deployed by the orchestrator on libvirtd (QEMU under TCG: the iPXE ROM hangs under this
machine's nested KVM) with its NIC on the network's bridge; the node's DHCP servers give the
diskless guest exactly the address the store allocated, seen as a ``nic.lease`` event; deleting
the VM takes its entry out of dnsmasq's hosts file.

libvirtd runs in the host's network namespace, so the bridge is made there by the test (a
private /24, no route beyond it) and removed after it, with the guests the test made."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from actors.dhcp import DhcpServers, GetDhcpServers
from actors.network import DhcpOptions, DhcpStatus
from actors.registration import host_record
from cloudcore.events.base import Event
from cloudcore.store import Store
from cloudcore.store.records import VM, Datacenter, Tenant
from tests.component.gateway.conftest import ApiClient, api_settings, serve_api
from tests.integration.libvirt.conftest import virsh
from tests.waiting import eventually


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=30)


@pytest.fixture
def bridge() -> Iterator[tuple[str, str]]:
    """A bridge in the host's namespace with the first address of a private /24: its name and
    the /24's prefix (``10.79.N.``)."""
    if os.geteuid() != 0 or shutil.which("dnsmasq") is None:
        pytest.skip("a bridge and dnsmasq need root and dnsmasq-base")
    name, third = f"ccb{os.urandom(3).hex()}", 100 + os.urandom(1)[0] % 100
    prefix = f"10.79.{third}."
    _ip("link", "add", name, "type", "bridge")
    try:
        _ip("addr", "add", f"{prefix}1/24", "dev", name)
        _ip("link", "set", name, "up")
        yield name, prefix
    finally:
        _ip("link", "del", name, check=False)


@pytest.fixture
async def api(libvirtd: str, sqlite_store: Store, tmp_path: Path) -> AsyncIterator[ApiClient]:
    settings = api_settings(tmp_path)
    await sqlite_store.create(Tenant(id="acme", name="acme"))
    await sqlite_store.create(Datacenter(id="dc1", name="dc1"))  # no demo: only this host
    host = host_record(
        settings,
        host_id=f"qemu-{os.urandom(3).hex()}",
        datacenter_id="dc1",
        hypervisor="libvirt",
        uri=libvirtd,
        physical_cpus=8,
        physical_memory_mib=8192,
    )
    tcg = {**host.capabilities, "driver.domain_type": "qemu"}
    await sqlite_store.create(msgspec.structs.replace(host, capabilities=tcg))
    async with serve_api(sqlite_store, settings) as client:
        try:
            yield client
        finally:
            for vm in (await sqlite_store.list(VM, limit=100)).items:
                virsh("destroy", f"cc-{vm.id}", check=False)
                virsh("undefine", f"cc-{vm.id}", check=False)


async def _first(events: AsyncIterator[Event], kind: str) -> Event:
    async for event in events:
        if event.type == kind:
            return event
    raise AssertionError("the bus closed")


async def test_a_vm_deployed_through_the_api_takes_its_address_from_dnsmasq(
    api: ApiClient, bridge: tuple[str, str], tmp_path: Path
) -> None:
    name, prefix = bridge
    bus = api.orchestrator.services.events
    options = DhcpOptions(state_dir=str(tmp_path / "dhcp"), user="root", resync_interval=3600)
    dhcp = api.system.spawn(DhcpServers, api.store, bus, options, "dc1", name="dhcp")
    leases = bus.subscribe(types=("nic.lease",))
    first_lease = asyncio.ensure_future(_first(leases, "nic.lease"))

    lan = {"name": "lan", "datacenter_id": "dc1", "cidr": f"{prefix}0/24", "bridge": name}
    net = await api.call("POST", "/networks", "alice", {**lan, "gateway": f"{prefix}1"})
    assert net.status == 201, net.body
    web = {"name": "pxe", "datacenter_id": "dc1", "cpus": 1, "memory_mib": 128}
    r = await api.call("POST", "/vms", "alice", {**web, "nics": [{"network_id": net.body["id"]}]})
    assert r.status == 202, r.body
    assert (await api.wait_task(r.body["id"], timeout=45)).state == "SUCCEEDED"
    vm_id = r.body["subject"].removeprefix("vm/")
    [nic] = (await api.call("GET", f"/vms/{vm_id}/nics", "alice")).body

    lease = await asyncio.wait_for(first_lease, 45)
    assert (lease.data["mac"], lease.data["address"]) == (nic["mac"], nic["address"])
    print(f"the guest took {nic['address']} ({nic['mac']}) from dnsmasq on {name}")
    statuses: dict[str, DhcpStatus] = await dhcp.ask(GetDhcpServers())
    assert [(x.mac, x.address) for x in statuses[net.body["id"]].leases] == [
        (nic["mac"], nic["address"])
    ]

    deleted = await api.call("DELETE", f"/vms/{vm_id}", "alice")
    assert (await api.wait_task(deleted.body["id"], timeout=30)).state == "SUCCEEDED"

    async def entry_gone() -> bool:
        now: dict[str, DhcpStatus] = await dhcp.ask(GetDhcpServers())
        return now[net.body["id"]].entries == ()

    await eventually(entry_gone, timeout=10)
    assert (tmp_path / "dhcp" / net.body["id"] / "hosts").read_text() == ""
    await leases.aclose()
