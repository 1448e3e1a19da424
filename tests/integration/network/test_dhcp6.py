"""DHCPv6: the network actor's dnsmasq serves an IPv6 network's static entries. A DHCPv6
client (``dhcp6_client.py``: Solicit, Advertise, Request, Reply, with a DUID-LL of its MAC) in a
second network namespace, on a veth plugged into the bridge with the NIC's MAC, gets exactly the
address the store allocated; the lease comes back as a ``nic.lease`` event with the NIC's MAC."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from actors.network import DhcpOptions, DhcpStatus, NetworkActor, SyncDhcp
from cloudcore.config import RuntimeSettings
from cloudcore.runtime import ActorRef, ActorSystem
from cloudcore.store import Store
from cloudcore.store.records import Datacenter, Network, new_id
from cloudcore.store.sqlite import SqliteStore
from tests.integration.network.conftest import Netns
from tests.waiting import eventually

CLIENT = Path(__file__).with_name("dhcp6_client.py")


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=30)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    backend = await SqliteStore.connect(tmp_path / "cloudcore.db")
    await backend.upgrade()
    yield backend
    await backend.close()


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    actors = ActorSystem("dhcp6", RuntimeSettings(ask_timeout=30.0, shutdown_timeout=10.0))
    yield actors
    await actors.shutdown()


@pytest.fixture
def client_ns(netns: Netns) -> Iterator[str]:
    """A second namespace joined to the bridge by a veth pair: the client's end is ``eth0``."""
    name = f"{netns.name}-c"
    _ip("netns", "add", name)
    try:
        for ns in (netns.name, name):  # no duplicate address detection: addresses at once
            for key in ("all", "default"):
                _ip("netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0")
        _ip("-n", netns.name, "addr", "add", "fd77::1/64", "dev", netns.bridge, "nodad")
        _ip("-n", netns.name, "link", "add", "ccv0", "type", "veth", "peer", "eth0", "netns", name)
        _ip("-n", netns.name, "link", "set", "ccv0", "master", netns.bridge, "up")
        yield name
    finally:
        _ip("netns", "del", name, check=False)


async def test_an_ipv6_nic_gets_exactly_its_address_by_dhcpv6(
    store: Store, system: ActorSystem, netns: Netns, client_ns: str, tmp_path: Path
) -> None:
    dc = await store.create(Datacenter(id=new_id("dc-"), name="dc"))
    network = await store.create_network(
        Network(
            id=new_id("net-"),
            datacenter_id=dc.id,
            name="v6",
            cidr="fd77::/64",
            bridge=netns.bridge,
            quarantine_s=0,
        )
    )
    nic = await store.allocate_ip(network.id, vm_id="vm-1", mac_prefix="52:54:00")
    options = DhcpOptions(
        state_dir=str(tmp_path / "dhcp"),
        wrapper=("ip", "netns", "exec", netns.name),
        user="root",
        lease_interval=0.2,
    )
    dhcp: ActorRef = system.spawn(NetworkActor, store, network, options)
    status: DhcpStatus = await dhcp.ask(SyncDhcp())
    assert status.pid is not None and status.entries == (f"{nic.mac},[{nic.address}]",)

    _ip("-n", client_ns, "link", "set", "eth0", "address", str(nic.mac))
    _ip("-n", client_ns, "link", "set", "eth0", "up")
    client = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", client_ns, sys.executable, str(CLIENT), "eth0", str(nic.mac),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(client.communicate(), 40)
    assert client.returncode == 0, (out, err, (tmp_path / "dhcp" / network.id / "log").read_text())
    assert out.decode().strip() == nic.address

    async def leased() -> DhcpStatus | None:
        now: DhcpStatus = await dhcp.ask(SyncDhcp())
        return now if now.leases else None

    granted = await eventually(leased, timeout=10)
    assert [(x.mac, x.address) for x in granted.leases] == [(nic.mac, nic.address)]
    events = [e for e in await store.read_outbox() if e.type == "nic.lease"]
    assert [e.data for e in events] == [{"mac": nic.mac, "address": nic.address}]
