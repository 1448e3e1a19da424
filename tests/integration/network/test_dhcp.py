"""DHCP for real: the network actor's dnsmasq, in a network namespace on a bridge the test makes,
gives diskless QEMU guests (their NIC's iPXE ROM) exactly the addresses the store allocated."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.network import DhcpOptions, DhcpStatus, GetDhcpStatus, NetworkActor, SyncDhcp
from cloudcore.config import RuntimeSettings
from cloudcore.runtime import ActorRef, ActorSystem
from cloudcore.store import Store
from cloudcore.store.records import Datacenter, IpAllocation, Network, new_id
from cloudcore.store.sqlite import SqliteStore
from tests.integration.network.conftest import Netns
from tests.waiting import eventually


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    backend = await SqliteStore.connect(tmp_path / "cloudcore.db")
    await backend.upgrade()
    yield backend
    await backend.close()


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    actors = ActorSystem("dhcp", RuntimeSettings(ask_timeout=30.0, shutdown_timeout=10.0))
    yield actors
    await actors.shutdown()


async def _network(store: Store, netns: Netns) -> Network:
    dc = await store.create(Datacenter(id=new_id("dc-"), name="dc"))
    return await store.create_network(
        Network(
            id=new_id("net-"),
            datacenter_id=dc.id,
            name="lan",
            cidr="10.77.0.0/24",
            gateway="10.77.0.1",
            bridge=netns.bridge,
            quarantine_s=0,
        )
    )


async def _leased(dhcp: ActorRef, nic: IpAllocation) -> DhcpStatus | None:
    status: DhcpStatus = await dhcp.ask(SyncDhcp())
    seen = [(lease.mac, lease.address) for lease in status.leases]
    return status if (nic.mac, nic.address) in seen else None


async def test_a_guest_takes_exactly_its_address_and_dnsmasq_is_restarted_when_killed(
    store: Store, system: ActorSystem, netns: Netns, tmp_path: Path
) -> None:
    network = await _network(store, netns)
    first = await store.allocate_ip(network.id, vm_id="vm-1", mac_prefix="52:54:00")
    second = await store.allocate_ip(network.id, vm_id="vm-2", mac_prefix="52:54:00")
    options = DhcpOptions(
        state_dir=str(tmp_path / "dhcp"),
        wrapper=("ip", "netns", "exec", netns.name),
        user="root",  # pytest's tmp dirs are 0700
    )
    dhcp = system.spawn(NetworkActor, store, network, options)
    status: DhcpStatus = await dhcp.ask(SyncDhcp())
    assert status.pid is not None
    assert set(status.entries) == {f"{first.mac},{first.address}", f"{second.mac},{second.address}"}

    booted = time.monotonic()
    netns.boot_guest(str(first.mac))
    granted = await eventually(lambda: _leased(dhcp, first), timeout=60, interval=0.5)
    print(f"guest booted -> lease of {first.address} in {time.monotonic() - booted:.1f} s")
    leases = (tmp_path / "dhcp" / network.id / "leases").read_text()
    assert f"{first.mac} {first.address}" in leases
    assert [(x.mac, x.address) for x in granted.leases] == [(first.mac, first.address)]
    events = [e for e in await store.read_outbox() if e.type == "nic.lease"]
    assert [e.data for e in events] == [{"mac": first.mac, "address": first.address}]

    # dnsmasq killed under the actor: started again, with the same entries
    os.kill(granted.pid, signal.SIGKILL)
    restarted: DhcpStatus = await eventually(
        lambda: _restarted(dhcp, granted.pid), timeout=20, interval=0.1
    )
    assert restarted.starts == 2 and restarted.entries == status.entries

    # a second guest gets its own address from the restarted dnsmasq
    netns.boot_guest(str(second.mac))
    await eventually(lambda: _leased(dhcp, second), timeout=60, interval=0.5)
    assert second.address != first.address

    # the first VM deleted: its entry leaves the hosts file
    await store.release_vm_ips("vm-1")
    after: DhcpStatus = await dhcp.ask(SyncDhcp())
    assert after.entries == (f"{second.mac},{second.address}",)
    hosts = (tmp_path / "dhcp" / network.id / "hosts").read_text()
    assert hosts == f"{second.mac},{second.address}\n"


async def _restarted(dhcp: ActorRef, old_pid: int | None) -> DhcpStatus | None:
    status: DhcpStatus = await dhcp.ask(GetDhcpStatus())
    return status if status.pid is not None and status.pid != old_pid else None
